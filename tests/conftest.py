"""Every test runs headless (Qt offscreen, no GPU needed) and never touches the user's cache dir."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Keep pytest's rewritten test modules (and the project's own bytecode) in the gitignored
# __pycache__ folders even where PYTHONDONTWRITEBYTECODE is set: otherwise every run re-parses and
# rewrites the asserts of 250 test modules and recompiles the project, 6-10 s of the fast tier.
sys.dont_write_bytecode = False
# One torch thread in this process and in every job, app and CLI it starts (the pipeline engine
# still gives its stage processes the cores' share, core.training.engine.pipeline_launch). The
# tests train tiny models, where a second thread saves nothing; but where the test process, a job
# and mypy share two cores, OpenMP's threads spin-wait for a partner that is not running: a
# 30-step float64 loop took 2-3 s of CPU with one thread and 33-47 s with two.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Layer graphs and other cache entries go to a folder of this test session (subprocesses inherit it).
os.environ["ALLOT_CACHE_DIR"] = tempfile.mkdtemp(prefix="allot-test-cache-")
atexit.register(shutil.rmtree, os.environ["ALLOT_CACHE_DIR"], True)

# Hypothesis draws the same examples on every run and machine, so the suite that passed here is the
# one CI runs (a health check or a rare case cannot turn red by chance on a clean clone).
from hypothesis import settings  # noqa: E402

settings.register_profile("allot", derandomize=True, database=None)
settings.load_profile(os.environ.get("ALLOT_HYPOTHESIS_PROFILE", "allot"))


def pytest_collection_modifyitems(config, items) -> None:
    """Start mypy in the background when its test is going to run (tests/test_checks.py)."""
    if any(item.nodeid.endswith("test_checks.py::test_mypy_is_clean") for item in items):
        from tests.test_checks import start_mypy

        start_mypy()
