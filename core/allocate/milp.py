"""The MILP solver (HiGHS through scipy.optimize.milp), for what the exact
solver does not cover: layer graphs that branch, and placements that need
not be contiguous. On a chain with contiguous stages it solves the same
canonical model as `exact` and must agree with it.

Stages are indexed by position from the end, q = 0 for the last stage, so a
stage's micro-batches in flight (1F1B: min(m, q + 1)) are constants:

    x[l, q]  layer l runs at position q            (binary)
    z[q, d]  device d runs position q              (binary)
    u[q]     position q is used                    (binary; used from the end)
    w[g, q]  tied group g is stored at position q  (shared params once)
    y[a, q, r] output of layer a is sent from position q to r
    r[q, r]  seconds to send those bytes; t[q] stage time; tau the slowest

    minimise  sum_q t[q] + (m - 1) * tau
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.allocate.plan import FEASIBLE, OPTIMAL, Plan
from core.allocate.problem import Problem
from core.costs import (
    comm_factor,
    infeasible_plan,
    inflight_micro_batches,
    plan_from_placement,
    work_factor,
)
from core.units import format_bytes


@dataclass(frozen=True)
class MilpOptions:
    time_limit_s: float = 10.0
    contiguous: bool = True  # stages follow the data flow; False allows any placement
    relative_gap: float = 1e-7


def solve_milp(problem: Problem, options: MilpOptions | None = None) -> Plan:
    """Minimise the step time with HiGHS; report the proven gap if time runs out."""
    from scipy.optimize import milp

    options = options or MilpOptions()
    started = time.perf_counter()
    model = _Model(problem, options.contiguous)
    result = milp(
        c=model.objective(),
        integrality=model.integrality(),
        bounds=model.bounds(),
        constraints=model.constraints(),
        options={"time_limit": options.time_limit_s, "mip_rel_gap": options.relative_gap, "disp": False},
    )
    elapsed = time.perf_counter() - started
    if result.x is None:
        reason = "no placement fits the budgets" if result.status == 2 else (
            f"no placement found within {options.time_limit_s:g} s")
        return infeasible_plan(problem, "milp", _with_sizes(problem, reason), elapsed)
    placement = model.placement(result.x)
    plan = plan_from_placement(problem, placement, "milp", OPTIMAL, elapsed, gap=0.0)
    bound = getattr(result, "mip_dual_bound", None)
    proven = result.status == 0
    if not proven and plan.objective_s:
        gap = max(0.0, (plan.objective_s - (bound or 0.0)) / plan.objective_s)
        plan = plan.with_solver("milp", FEASIBLE, elapsed, gap)
    return plan


class _Model:
    """Variables, bounds and constraint rows of the MILP."""

    def __init__(self, problem: Problem, contiguous: bool):
        self.problem = problem
        self.layers, self.devices, self.setup = problem.layers, problem.devices, problem.setup
        self.n_layers, self.n_devices = len(self.layers), len(self.devices)
        self.positions = min(self.n_layers, self.n_devices)
        self.contiguous = contiguous
        self.chain = problem.is_chain and contiguous
        self.edges = problem.edges()
        self.groups = _tied_groups(problem)
        self._next = 0
        self._integer: list[int] = []
        self._upper: dict[int, float] = {}
        Q, L, D = self.positions, self.n_layers, self.n_devices
        self.x = self._block((L, Q), integer=True, upper=1)
        self.z = self._block((Q, D), integer=True, upper=1)
        self.u = self._block((Q,), integer=True, upper=1)
        self.w = self._block((len(self.groups), Q), upper=1)
        self.sends = self._send_pairs()
        self.y = {key: self._scalar(upper=1) for key in self.sends}
        self.r = {pair: self._scalar() for pair in {(q, r) for (_, q, r) in self.sends}}
        self.t = self._block((Q,))
        self.tau = self._scalar()
        self.rows: list[tuple[dict[int, float], float, float]] = []
        self._build_rows()

    # --- variables -----------------------------------------------------

    def _block(self, shape: tuple[int, ...], integer: bool = False, upper: float | None = None) -> np.ndarray:
        size = int(np.prod(shape)) if shape else 1
        index = np.arange(self._next, self._next + size).reshape(shape)
        self._next += size
        if integer:
            self._integer.extend(index.ravel().tolist())
        if upper is not None:
            self._upper.update({int(i): upper for i in index.ravel()})
        return index

    def _scalar(self, upper: float | None = None) -> int:
        return int(self._block((1,), upper=upper)[0])

    def _send_pairs(self) -> list[tuple[int, int, int]]:
        """(producer, from position, to position) that can carry data."""
        producers = sorted({a for a, _ in self.edges})
        Q = self.positions
        if self.chain:
            return [(a, q, q - 1) for a in producers for q in range(1, Q)]
        if self.contiguous:  # stages follow the data flow: receivers come later (smaller q)
            return [(a, q, r) for a in producers for q in range(Q) for r in range(q)]
        return [(a, q, r) for a in producers for q in range(Q) for r in range(Q) if r != q]

    # --- problem data ----------------------------------------------------

    def objective(self) -> np.ndarray:
        c = np.zeros(self._next)
        c[self.t] = 1.0
        c[self.tau] = self.setup.micro_batches - 1
        return c

    def integrality(self) -> np.ndarray:
        kinds = np.zeros(self._next)
        kinds[self._integer] = 1
        return kinds

    def bounds(self):  # noqa: ANN201 - scipy's Bounds
        from scipy.optimize import Bounds

        upper = np.full(self._next, np.inf)
        for index, value in self._upper.items():
            upper[index] = value
        return Bounds(np.zeros(self._next), upper)

    def constraints(self):  # noqa: ANN201 - scipy's LinearConstraint
        from scipy.optimize import LinearConstraint
        from scipy.sparse import coo_matrix

        rows, cols, values = [], [], []
        for row, (coefficients, _, _) in enumerate(self.rows):
            for col, value in coefficients.items():
                rows.append(row)
                cols.append(col)
                values.append(value)
        matrix = coo_matrix((values, (rows, cols)), shape=(len(self.rows), self._next)).tocsr()
        lower = np.array([low for _, low, _ in self.rows])
        upper = np.array([high for _, _, high in self.rows])
        return LinearConstraint(matrix, lower, upper)

    def placement(self, solution: np.ndarray) -> list[tuple[int, list[int]]]:
        """Stages in pipeline order (highest position first)."""
        stages = []
        for q in reversed(range(self.positions)):
            if solution[self.u[q]] < 0.5:
                continue
            device = int(np.argmax(solution[self.z[q]]))
            layers = [l for l in range(self.n_layers) if solution[self.x[l, q]] > 0.5]
            stages.append((device, layers))
        return stages

    # --- constraints -----------------------------------------------------

    def _row(self, coefficients: dict[int, float], low: float = -np.inf, high: float = np.inf) -> None:
        self.rows.append((coefficients, low, high))

    def _build_rows(self) -> None:
        self._assignment_rows()
        self._order_rows()
        self._memory_rows()
        self._send_rows()
        self._time_rows()

    def _assignment_rows(self) -> None:
        Q, L, D = self.positions, self.n_layers, self.n_devices
        for l in range(L):
            self._row({int(self.x[l, q]): 1.0 for q in range(Q)}, 1, 1)
        for q in range(Q):
            row = {int(self.z[q, d]): 1.0 for d in range(D)}
            row[int(self.u[q])] = -1.0
            self._row(row, 0, 0)
            nonempty = {int(self.x[l, q]): 1.0 for l in range(L)}
            nonempty[int(self.u[q])] = -1.0
            self._row(nonempty, 0, np.inf)
            for l in range(L):
                self._row({int(self.x[l, q]): 1.0, int(self.u[q]): -1.0}, -np.inf, 0)
        for d in range(D):
            self._row({int(self.z[q, d]): 1.0 for q in range(Q)}, -np.inf, 1)
        self._symmetry_rows()

    def _symmetry_rows(self) -> None:
        """Of identical devices, use the earlier ones first (same plans, fewer branches)."""
        previous: dict[tuple[int, float, float], int] = {}
        for d, device in enumerate(self.devices):
            key = (device.memory_bytes, device.tflops, device.bandwidth_gbps)
            if key in previous:
                row = {int(self.z[q, d]): 1.0 for q in range(self.positions)}
                for q in range(self.positions):
                    row[int(self.z[q, previous[key]])] = -1.0
                self._row(row, -np.inf, 0)
            previous[key] = d

    def _order_rows(self) -> None:
        """Positions are used from the end; stages follow the data flow when contiguous."""
        Q = self.positions
        for q in range(Q - 1):
            self._row({int(self.u[q]): 1.0, int(self.u[q + 1]): -1.0}, 0, np.inf)
        if not self.contiguous:
            return
        for a, b in self.edges:
            row: dict[int, float] = {}
            for q in range(Q):
                row[int(self.x[a, q])] = row.get(int(self.x[a, q]), 0.0) + q
                row[int(self.x[b, q])] = row.get(int(self.x[b, q]), 0.0) - q
            self._row(row, 0, np.inf)

    def _memory_rows(self) -> None:
        b = self.setup.bytes_per_param
        for q in range(self.positions):
            inflight = inflight_micro_batches(self.setup, q + 1)
            row: dict[int, float] = {}
            for l, layer in enumerate(self.layers):
                own = layer.params - (layer.tied_params if layer.tied_group is not None else 0)
                row[int(self.x[l, q])] = b * own + inflight * layer.activation_bytes
            for g, (size, members) in enumerate(self.groups):
                row[int(self.w[g, q])] = b * size
                for l in members:
                    self._row({int(self.w[g, q]): 1.0, int(self.x[l, q]): -1.0}, 0, np.inf)
            for d, device in enumerate(self.devices):
                row[int(self.z[q, d])] = -float(device.memory_bytes)
            self._row(row, -np.inf, 0)

    def _send_rows(self) -> None:
        """y[a, q, r] >= 1 when a runs at q and one of its consumers at r."""
        consumers: dict[int, list[int]] = {}
        for a, b in self.edges:
            consumers.setdefault(a, []).append(b)
        for (a, q, r), y in self.y.items():
            for b in consumers[a]:
                self._row({y: 1.0, int(self.x[a, q]): -1.0, int(self.x[b, r]): -1.0}, -1, np.inf)

    def _time_rows(self) -> None:
        k, c = work_factor(self.setup), comm_factor(self.setup)
        bandwidths = sorted({device.bandwidth_gbps for device in self.devices})
        slowest = min(device.tflops for device in self.devices)
        total_send = sum(c * layer.output_bytes for layer in self.layers) / (min(bandwidths) * 1e9)
        big = k * sum(layer.flops for layer in self.layers) / (slowest * 1e12) + total_send + 1.0
        for (q, r), var in self.r.items():
            for low_q in bandwidths:
                for low_r in bandwidths:
                    link = min(low_q, low_r)
                    row = {var: 1.0}
                    for (a, qq, rr), y in self.y.items():
                        if (qq, rr) == (q, r):
                            row[y] = -c * self.layers[a].output_bytes / (link * 1e9)
                    if len(bandwidths) > 1:  # only binds when q and r sit on these link classes
                        for d, device in enumerate(self.devices):
                            if device.bandwidth_gbps == low_q:
                                row[int(self.z[q, d])] = row.get(int(self.z[q, d]), 0.0) - big
                            if device.bandwidth_gbps == low_r:
                                row[int(self.z[r, d])] = row.get(int(self.z[r, d]), 0.0) - big
                        self._row(row, -2 * big, np.inf)
                    else:
                        self._row(row, 0, np.inf)
        fastest = max(device.tflops for device in self.devices)
        total = k * sum(layer.flops for layer in self.layers) / 1e12
        # Valid cuts that need no big-M and tighten the LP bound: no device beats
        # the fastest one, and the slowest stage is no faster than perfect balance.
        self._row({self.tau: 1.0}, total / sum(device.tflops for device in self.devices), np.inf)
        for q in range(self.positions):
            self._row({self.tau: 1.0, int(self.t[q]): -1.0}, 0, np.inf)
            cut = {int(self.t[q]): 1.0}
            for l, layer in enumerate(self.layers):
                cut[int(self.x[l, q])] = -k * layer.flops / (fastest * 1e12)
            self._row(cut, 0, np.inf)
            for d, device in enumerate(self.devices):
                row = {int(self.t[q]): 1.0, int(self.z[q, d]): -big}
                for l, layer in enumerate(self.layers):
                    row[int(self.x[l, q])] = -k * layer.flops / (device.tflops * 1e12)
                for (qq, r), var in self.r.items():
                    if qq == q:
                        row[var] = row.get(var, 0.0) - 1.0
                self._row(row, -big, np.inf)


def _tied_groups(problem: Problem) -> list[tuple[int, list[int]]]:
    groups: dict[str, tuple[int, list[int]]] = {}
    for l, layer in enumerate(problem.layers):
        if layer.tied_group is not None:
            groups.setdefault(layer.tied_group, (layer.tied_params, []))[1].append(l)
    return list(groups.values())


def _with_sizes(problem: Problem, reason: str) -> str:
    need = problem.setup.bytes_per_param * sum(layer.params for layer in problem.layers)
    budgets = sum(device.memory_bytes for device in problem.devices)
    return f"{reason} (weights and state alone need {format_bytes(need)}; budgets total {format_bytes(budgets)})"
