"""The two exact solvers by their own names; `exact` picks the one the setup needs (issue 20)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import InputError
from core.planning.solvers import EXACT_HYBRID, EXACT_PIPELINE, exact_solver_for, solve
from tests.core.planning.problems import device, layer, problem

LAYERS = [layer(f"l{i}", params=100, flops=1e12 * (i + 1), act=10, out=1000) for i in range(4)]
DEVICES = [device("a", 10_000, 100.0, 25.0), device("b", 10_000, 50.0, 25.0), device("c", 10_000, 50.0, 25.0),
           device("d", 10_000, 100.0, 25.0)]
SPLIT = {"bytes_per_param": 16.0, "weight_bytes_per_param": 2.0, "grad_bytes_per_param": 2.0,
         "optimizer_bytes_per_param": 12.0}


def without_name_and_time(plan):
    return replace(plan, solver="", solve_time_s=0.0)


def test_a_pipeline_setup_is_exact_pipelines_and_exact_is_it():
    pipeline = problem(LAYERS, DEVICES, micro_batches=4)
    assert exact_solver_for(pipeline.setup) == EXACT_PIPELINE
    exact, named = solve(pipeline, "exact"), solve(pipeline, EXACT_PIPELINE)
    assert (exact.solver, named.solver) == ("exact", EXACT_PIPELINE)
    assert without_name_and_time(exact) == without_name_and_time(named)
    with pytest.raises(InputError, match="exact-hybrid cannot plan this setup.*--solver exact-pipeline"):
        solve(pipeline, EXACT_HYBRID)


def test_a_setup_with_replicas_or_zero_is_exact_hybrids():
    hybrid = problem(LAYERS, DEVICES, micro_batches=4, data_parallel=2, zero=1, **SPLIT)
    assert exact_solver_for(hybrid.setup) == EXACT_HYBRID
    exact, named = solve(hybrid, "exact"), solve(hybrid, EXACT_HYBRID)
    assert named.solver == EXACT_HYBRID and named.data_parallel == 2 and named.zero == 1
    assert without_name_and_time(exact) == without_name_and_time(named)
    with pytest.raises(InputError, match="exact-pipeline cannot plan this setup.*--solver exact-hybrid"):
        solve(hybrid, EXACT_PIPELINE)
