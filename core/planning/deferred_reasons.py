"""Infeasibility reasons deferred while a search tries many choices (t, b) and keeps one.

Explaining why nothing fits is a bisection over the budgets (core.planning.infeasibility), far
dearer than the solve itself; a search over t or b needs it only for the answer it keeps. Numpy-free,
so the front door imports it without the solvers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

P = TypeVar("P")

DEFERRED_REASON = "does not fit (not explained: another choice was searched)"
_deferred = [False]


@contextlib.contextmanager
def reasons_deferred() -> Iterator[None]:
    """Within it the exact solvers answer an infeasible problem with DEFERRED_REASON instead of
    working out why (a bisection over the budgets): searches over t and b that only need the
    fastest feasible plan explain the answer they keep, once, outside."""
    before, _deferred[0] = _deferred[0], True
    try:
        yield
    finally:
        _deferred[0] = before


def reason_for(problem: P, explain: Callable[[P], str]) -> str:
    """`explain(problem)`, or DEFERRED_REASON inside reasons_deferred()."""
    return DEFERRED_REASON if _deferred[0] else explain(problem)
