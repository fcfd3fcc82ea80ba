"""Every solver's plan on seeded random problems is byte-identical to the golden file.

golden_plans.json was written by the code before the cost model became one
schedule object (core.planning.schedules); a refactor of the cost model, the
solvers or the baselines must leave each answer bit for bit as it was. The fast
tier checks the first problems, the slow tier all of them (v1 and v2, gpipe and
1f1b, train and infer, ZeRO 0-3, fixed and auto d, branching graphs, infeasible).
"""

from __future__ import annotations

import json

import pytest

from tests.core.planning.golden_plans import FULL_COUNT, GOLDEN, SEED, answers_of, canonical, digest

FAST_COUNT = 60


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


def _check(indices: range) -> None:
    golden = _golden()
    assert golden["seed"] == SEED and golden["count"] >= FULL_COUNT
    differ = []
    for index in indices:
        record = answers_of(index)
        if digest(record) != golden["sha256"][index]:
            differ.append(index)
            kept = golden["full"].get(str(index))
            if kept is not None:  # show the first difference in full
                assert canonical(record) == canonical(kept)
    assert not differ, f"plans changed on problems {differ[:20]} (of {len(differ)})"


def test_plans_are_byte_identical_on_the_first_problems():
    _check(range(FAST_COUNT))


@pytest.mark.slow
def test_plans_are_byte_identical_on_all_problems():
    _check(range(FULL_COUNT))


def test_a_changed_plan_changes_its_digest():
    record = answers_of(0)
    exact = record["answers"]["exact"]
    assert isinstance(exact, dict)
    changed = json.loads(canonical(record))
    changed["answers"]["exact"]["lower_bound_s"] = exact["lower_bound_s"] * (1 + 2**-52)
    assert digest(changed) != digest(record)
