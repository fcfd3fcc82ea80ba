"""Every test runs headless: Qt offscreen, no GPU needed."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
