"""A one-machine pipeline run listens on loopback only: no port of it is open to the network.

torch's TCPStore listens on every interface by default; core.training.engine.
loopback_run hands it sockets bound to 127.0.0.1, and gloo is kept on `lo`.
"""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from core.training.launcher import read_status, start_run, stop_run, wait_run
from core.training.metrics import read_metrics
from core.training.plan_file import read_plan_file
from tests.core.training.support import tiny_config, wait_for, write_corpus, write_plan

pytestmark = pytest.mark.slow  # a background job and torchrun


def listeners(pid: int) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every listening socket of a process and its children."""
    found = []
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(process.pid, c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def test_a_pipeline_run_listens_on_loopback_only(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    config = tiny_config(corpus, engine="pipeline", steps=400, checkpoint_interval=1000, eval_interval=1000)
    run_dir = start_run(config, tmp_path / "run", read_plan_file(write_plan(tmp_path / "plan.json")),
                        emit=lambda _: None).run_dir
    try:
        wait_for(lambda: len(read_metrics(run_dir / "metrics.jsonl")) >= 2, 300, "training steps")
        found = listeners(read_status(run_dir).pid)
    finally:
        stop_run(run_dir)
        wait_run(run_dir, timeout_s=120)
    assert len({pid for pid, _, _ in found}) >= 2  # the agent's store and the workers' gloo sockets
    exposed = [entry for entry in found if not ipaddress.ip_address(entry[1]).is_loopback]
    assert exposed == []
