"""HiGHS (through highspy) for the MILP solver: an integer program handed over column-wise,
silenced, with the tolerances the cost model's smallest terms need (core/planning/milp.py)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

FEASIBILITY_TOLERANCE = 1e-9  # HiGHS tolerances, in time_scale units (see highs_for)


def highs_for(model: Any, time_limit_s: float, relative_gap: float) -> Any:
    """A HiGHS instance holding `model` (objective, bounds, rows, integrality, a column-wise
    matrix), silent, with the time limit, the relative gap and tight tolerances."""
    import highspy

    matrix = model.matrix()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = model.size, len(model.rows)
    lp.col_cost_ = model.objective()
    lp.col_lower_ = np.zeros(model.size)
    lp.col_upper_ = model.upper_bounds()
    lp.row_lower_ = np.array([low for _, low, _ in model.rows])
    lp.row_upper_ = np.array([high for _, _, high in model.rows])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = matrix.indptr
    lp.a_matrix_.index_ = matrix.indices
    lp.a_matrix_.value_ = matrix.data
    integer, continuous = highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous
    lp.integrality_ = [integer if flag else continuous for flag in model.integrality()]
    with _stdout_silenced():  # HiGHS prints a banner when created; --json owns stdout
        highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("time_limit", float(time_limit_s))
    highs.setOptionValue("mip_rel_gap", float(relative_gap))
    highs.setOptionValue("mip_abs_gap", 0.0)  # objectives are in time_scale units; only the relative gap counts
    # A communication term can be ~1e-6 of the slowest stage (a few hundred bytes against a
    # long compute): at HiGHS's default tolerances (1e-6) it is lost in the noise and a
    # plan one transfer slower is called optimal. Resolve terms down to 1e-9 of a stage.
    for name in ("mip_feasibility_tolerance", "primal_feasibility_tolerance", "dual_feasibility_tolerance"):
        highs.setOptionValue(name, FEASIBILITY_TOLERANCE)
    highs.passModel(lp)
    return highs


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def highs_solution(values: np.ndarray) -> Any:
    """A warm start for HiGHS from column values."""
    import highspy

    solution = highspy.HighsSolution()
    solution.col_value = list(values)
    solution.value_valid = True
    return solution
