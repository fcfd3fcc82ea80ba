"""What the helper processes share: ending when the process that started them is gone."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def exit_with_parent(poll_s: float, exit_code: int) -> None:
    """End this process when its parent goes away.

    A parent killed hard (kill -9, a crash) never says goodbye; a child blocked on a
    queue or a collective would otherwise live on, holding memory or ports. A daemon
    thread polls the parent's id and leaves with `exit_code` when it changes.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(exit_code)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def die_with_parent() -> None:
    """Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), the kernel kills this process when its parent
    goes (even by kill -9); elsewhere nothing."""
    if sys.platform != "linux":
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass
