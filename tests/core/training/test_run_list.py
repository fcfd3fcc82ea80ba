"""The run list's Started column is when the run began, not its latest resume (issue 19 item 6)."""

import time

from core.training.launcher import list_runs
from core.training.plan_file import read_plan_file
from core.training.run_dir import write_status
from core.training.runner import prepare_new_run
from tests.core.training.support import tiny_config, write_corpus, write_plan


def test_a_resume_keeps_the_started_time(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", lines=200)
    run = prepare_new_run(tiny_config(corpus, steps=4), tmp_path / "runs" / "a",
                          read_plan_file(write_plan(tmp_path / "plan.json")), emit=lambda _: None)
    paths = run.paths
    write_status(paths, state="stopped", started_at=time.time(), step=2)
    (first,) = list_runs(tmp_path / "runs")
    resumed_at = first.started_at + 3600.0
    write_status(paths, state="stopped", started_at=resumed_at, step=3)  # what a resumed job writes
    (again,) = list_runs(tmp_path / "runs")
    assert again.started_at == first.started_at != resumed_at
