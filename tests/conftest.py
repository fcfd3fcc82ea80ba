"""Every test runs headless (Qt offscreen, no GPU needed) and never touches the user's cache dir."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Layer graphs and other cache entries go to a folder of this test session (subprocesses inherit it).
os.environ["ALLOT_CACHE_DIR"] = tempfile.mkdtemp(prefix="allot-test-cache-")
atexit.register(shutil.rmtree, os.environ["ALLOT_CACHE_DIR"], True)
