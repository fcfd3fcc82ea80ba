"""The MILP solver (HiGHS through highspy, core/planning/highs_model.py), for what the exact solver
does not cover: layer graphs that branch, and placements that need not be contiguous. On a chain
with contiguous stages it solves the same canonical model as `exact` and must agree with it.

Stages are indexed by position from the end, q = 0 for the last stage, so a
stage's micro-batches in flight (1F1B: min(m, q + 1)) are constants:

    x[i, q]  layer i runs at position q            (binary)
    z[q, d]  device d runs position q              (binary)
    u[q]     position q is used                    (binary; used from the end)
    w[g, q]  tied group g is stored at position q  (shared params once)
    y[a, q, r] output of layer a is sent from position q to r
    r[q, r]  seconds to send those bytes; t[q] stage time; tau the slowest

    minimise  sum_q t[q] + w * tau

with w the schedule's bubble weight (m - 1: core.planning.schedules), the micro-batches in flight
the schedule's, and every time coefficient the cost model's compute_time_s / send_time_s over time_scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from core.planning.costs import (
    bytes_split_per_param,
    comm_factor,
    infeasible_plan,
    inflight_micro_batches,
    layer_forward_s,
    lower_bound_s,
    optimizer_step_bytes,
    output_layers,
    plan_from_placement,
    send_time_s,
    stage_compute_s,
    stage_transient_bytes,
    tied_gradient_bytes,
    timed_sum_s,
    work_factor,
)
from core.planning.highs_model import highs_for, highs_solution
from core.planning.milp_inputs import chain_start, reason_with_sizes, tied_groups, time_scale
from core.planning.plan import FEASIBLE, OPTIMAL, Plan
from core.planning.problem import Device, Problem
from core.units import TFLOP

_BIG_M = 2.0  # every stage time is at most 1 time_scale unit, so 2 switches a time row off


@dataclass(frozen=True)
class MilpOptions:
    time_limit_s: float = 10.0
    contiguous: bool = True  # stages follow the data flow; False allows any placement
    relative_gap: float = 1e-7


def solve_milp(problem: Problem, options: MilpOptions | None = None) -> Plan:
    """Minimise the step time with HiGHS; report the proven gap if time runs out.

    HiGHS starts from the exact solver's best split of the layers in their
    given (topological) order, so it always has a placement to improve on.
    """
    options = options or MilpOptions()
    started = time.perf_counter()
    model = _Model(problem, options.contiguous)
    highs = highs_for(model, options.time_limit_s, options.relative_gap)
    start = chain_start(problem)
    if start is not None:
        highs.setSolution(highs_solution(model.warm_start(start)))
    highs.run()
    elapsed = time.perf_counter() - started
    status = highs.getModelStatus()
    values = np.array(highs.getSolution().col_value) if highs.getInfo().primal_solution_status else None
    if values is None or len(values) != model.size:
        reason = "no placement fits the budgets" if "Infeasible" in str(status) else (
            f"no placement found within {options.time_limit_s:g} s")
        return infeasible_plan(problem, "milp", reason_with_sizes(problem, reason), elapsed)
    plan = plan_from_placement(problem, model.placement(values), "milp", OPTIMAL, elapsed, gap=0.0)
    if "Optimal" not in str(status) and plan.objective_s:
        bound = highs.getInfo().mip_dual_bound * model.time_scale
        gap = min(1.0, max(0.0, (plan.objective_s - bound) / plan.objective_s))
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
        self.groups = tied_groups(problem)
        self.outputs = sorted(output_layers(problem))
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
        self.working = self._block((Q,))  # the largest working memory of a layer at each position
        self.tau = self._scalar()
        self.rows: list[tuple[dict[int, float], float, float]] = []
        self.time_scale = time_scale(problem)
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
        c[self.tau] = self.setup.pipeline_schedule.bubble_weight(self.setup.micro_batches, 1)
        return c

    @property
    def size(self) -> int:
        return self._next

    def integrality(self) -> np.ndarray:
        kinds = np.zeros(self._next, dtype=bool)
        kinds[self._integer] = True
        return kinds

    def upper_bounds(self) -> np.ndarray:
        upper = np.full(self._next, np.inf)
        for index, value in self._upper.items():
            upper[index] = value
        return upper

    def matrix(self):
        from scipy.sparse import coo_matrix

        rows, cols, values = [], [], []
        for row, (coefficients, _, _) in enumerate(self.rows):
            for col, value in coefficients.items():
                rows.append(row)
                cols.append(col)
                values.append(value)
        return coo_matrix((values, (rows, cols)), shape=(len(self.rows), self._next)).tocsc()

    def warm_start(self, placement: list[tuple[int, list[int]]]) -> np.ndarray:
        """Every variable's value for a placement given in pipeline order."""
        values = np.zeros(self._next)
        stages = len(placement)
        position_of_layer = {}
        for s, (d, layers) in enumerate(placement):
            q = stages - 1 - s
            values[self.u[q]] = 1
            values[self.z[q, d]] = 1
            for i in layers:
                values[self.x[i, q]] = 1
                position_of_layer[i] = q
        for g, (_, members) in enumerate(self.groups):
            for i in members:
                values[self.w[g, position_of_layer[i]]] = 1
        k, c = work_factor(self.setup), comm_factor(self.setup)
        device_at = {stages - 1 - s: d for s, (d, _) in enumerate(placement)}
        for (a, q, r), var in self.y.items():
            if position_of_layer[a] == q and any(position_of_layer[b] == r for x, b in self.edges if x == a):
                values[var] = 1
                link = min(self.devices[device_at[q]].bandwidth_gbps, self.devices[device_at[r]].bandwidth_gbps)
                values[self.r[(q, r)]] += send_time_s(c, self.layers[a].output_bytes, link) / self.time_scale
        for q in device_at:
            values[self.working[q]] = float(stage_transient_bytes(
                self.layers, [i for i in range(self.n_layers) if position_of_layer[i] == q], self.problem.is_chain))
        for q, d in device_at.items():
            flops = sum(layer.flops for i, layer in enumerate(self.layers) if position_of_layer[i] == q)
            comm = sum(values[var] for (sender, _), var in self.r.items() if sender == q)
            at_q = [i for i in range(len(self.layers)) if position_of_layer[i] == q]
            compute = stage_compute_s(k, flops, self.devices[d].tflops, timed_sum_s(self.problem, self.devices[d], at_q))
            values[self.t[q]] = compute / self.time_scale + comm
        values[self.tau] = max(values[self.t[q]] for q in device_at)
        return values

    def placement(self, solution: np.ndarray) -> list[tuple[int, list[int]]]:
        """Stages in pipeline order (highest position first)."""
        stages = []
        for q in reversed(range(self.positions)):
            if solution[self.u[q]] < 0.5:
                continue
            device = int(np.argmax(solution[self.z[q]]))
            layers = [i for i in range(self.n_layers) if solution[self.x[i, q]] > 0.5]
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
        for i in range(L):
            self._row({int(self.x[i, q]): 1.0 for q in range(Q)}, 1, 1)
        for q in range(Q):
            row = {int(self.z[q, d]): 1.0 for d in range(D)}
            row[int(self.u[q])] = -1.0
            self._row(row, 0, 0)
            nonempty = {int(self.x[i, q]): 1.0 for i in range(L)}
            nonempty[int(self.u[q])] = -1.0
            self._row(nonempty, 0, np.inf)
            for i in range(L):
                self._row({int(self.x[i, q]): 1.0, int(self.u[q]): -1.0}, -np.inf, 0)
        for d in range(D):
            self._row({int(self.z[q, d]): 1.0 for q in range(Q)}, -np.inf, 1)
        for i, may_start in enumerate(self.problem.stage_may_start()):
            if not may_start:  # the layer runs at the position of the layer before it
                for q in range(Q):
                    self._row({int(self.x[i, q]): 1.0, int(self.x[i - 1, q]): -1.0}, 0, 0)
        self._symmetry_rows()

    def _symmetry_rows(self) -> None:
        """Of identical devices, use the earlier ones first (same plans, fewer branches)."""
        previous: dict[tuple[int, float, float, str], int] = {}
        for d, device in enumerate(self.devices):
            key = (device.budget_bytes, device.tflops, device.bandwidth_gbps,
                   device.kind if self.problem.forward_times_s(device.kind) is not None else "")
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
        """Per position, costs.stage_memory_bytes <= budget: held bytes and buffers, plus each of the
        three moments of plan.peak_memory_bytes (first backward, a later one, the optimizer step) as a
        row of its own, the largest binding."""
        setup = self.setup
        weight, grad, optimizer = bytes_split_per_param(setup)
        step_per_param = float(optimizer_step_bytes(setup, 1.0, 1, 0))
        schedule = setup.pipeline_schedule
        for q in range(self.positions):
            inflight = inflight_micro_batches(setup, q + 1)
            later = schedule.inflight_later(setup.mode, setup.micro_batches, 1, inflight)
            held: dict[int, float] = {}
            params: dict[int, float] = {}  # each variable's parameters: the gradients' and the step's rows
            for i, layer in enumerate(self.layers):
                params[int(self.x[i, q])] = layer.params - (layer.tied_params if layer.tied_group is not None else 0)
            for g, (size, members) in enumerate(self.groups):
                params[int(self.w[g, q])] = size
                for i in members:
                    self._row({int(self.w[g, q]): 1.0, int(self.x[i, q]): -1.0}, 0, np.inf)
            held = {var: (weight + optimizer) * count for var, count in params.items()}
            for (a, sender, receiver), y in self.y.items():  # the pipeline's buffers
                out = float(self.layers[a].output_bytes)
                if sender == q:
                    held[y] = held.get(y, 0.0) + self._buffers(inflight, 0.0, out)
                if receiver == q:
                    held[y] = held.get(y, 0.0) + self._buffers(inflight, out, 0.0)
            for i in self.outputs:  # the model's output, kept by the stage that makes it
                held[int(self.x[i, q])] += self._buffers(inflight, 0.0, 0.0, float(self.layers[i].output_bytes))
            for d, device in enumerate(self.devices):
                held[int(self.z[q, d])] = -float(device.budget_bytes)
            for i, layer in enumerate(self.layers):  # K_q >= K_i less, on a chain, the acts of q's layers after i
                if layer.transient_bytes:
                    row = {int(self.working[q]): 1.0, int(self.x[i, q]): -float(layer.transient_bytes)}
                    if self.problem.is_chain:
                        row.update({int(self.x[k, q]): float(self.layers[k].activation_bytes)
                                    for k in range(i + 1, self.n_layers) if self.layers[k].activation_bytes})
                    self._row(row, 0, np.inf)
            moments = [(0.0, inflight, 1.0), (grad, later, 1.0)]  # (gradient bytes, in flight, working memory)
            if step_per_param:
                moments.append((grad + step_per_param, 0, 0.0))
            for moment, (grads, count, working) in enumerate(moments):
                row = dict(held)
                for (a, _, receiver), y in self.y.items() if moment == 1 else ():  # the gradient sent back before
                    if receiver == q:
                        row[y] += float(schedule.sent_back_bytes(setup.mode, setup.micro_batches, 1,
                                                                 float(self.layers[a].output_bytes)))
                for var, owned in params.items():
                    row[var] += grads * owned
                tied_grad = float(tied_gradient_bytes(setup, 1.0, 0.0)) if moment == 1 else 0.0
                for g, (size, members) in enumerate(self.groups) if tied_grad else ():  # the second gradient
                    row[int(self.w[g, q])] -= tied_grad * size
                    for i in members:
                        row[int(self.x[i, q])] += tied_grad * size
                for i, layer in enumerate(self.layers):
                    row[int(self.x[i, q])] += count * layer.activation_bytes
                row[int(self.working[q])] = working
                self._row(row, -np.inf, 0)

    def _buffers(self, inflight: int, received: float, sent: float, made: float = 0.0) -> float:
        return float(self.setup.pipeline_schedule.boundary_bytes(self.setup.mode, self.setup.micro_batches, 1,
                                                                 inflight, received, sent, made))

    def _send_rows(self) -> None:
        """y[a, q, r] >= 1 when a runs at q and one of its consumers at r."""
        consumers: dict[int, list[int]] = {}
        for a, b in self.edges:
            consumers.setdefault(a, []).append(b)
        for (a, q, r), y in self.y.items():
            for b in consumers[a]:
                self._row({y: 1.0, int(self.x[a, q]): -1.0, int(self.x[b, r]): -1.0}, -1, np.inf)

    def _time_rows(self) -> None:
        """Stage times t[q] and the slowest, tau, in units of time_scale (the slowest
        possible stage), so they are O(1) for HiGHS's tolerances."""
        self._send_time_rows()
        self._balance_cut()
        for q in range(self.positions):
            self._row({self.tau: 1.0, int(self.t[q]): -1.0}, 0, np.inf)  # tau: the slowest stage
            self._fastest_device_cut(q)
            for d in range(self.n_devices):
                self._stage_time_row(q, d)

    def _send_time_rows(self) -> None:
        """r[q, r] >= the time q's outputs for r take over the slower device's link: with
        several link classes, a row per pair, binding only when q and r sit on them."""
        bandwidths = sorted({device.bandwidth_gbps for device in self.devices})
        for (q, r), var in self.r.items():
            for low_q in bandwidths:
                for low_r in bandwidths:
                    row = {var: 1.0}
                    row.update(self._send_terms(q, r, min(low_q, low_r)))
                    if len(bandwidths) == 1:
                        self._row(row, 0, np.inf)
                        continue
                    for d, device in enumerate(self.devices):
                        if device.bandwidth_gbps == low_q:
                            row[int(self.z[q, d])] = row.get(int(self.z[q, d]), 0.0) - _BIG_M
                        if device.bandwidth_gbps == low_r:
                            row[int(self.z[r, d])] = row.get(int(self.z[r, d]), 0.0) - _BIG_M
                    self._row(row, -2 * _BIG_M, np.inf)

    def _send_terms(self, q: int, r: int, link_gbps: float) -> dict[int, float]:
        """-(time to send each producer's output from q to r), on its send variable y."""
        c = comm_factor(self.setup)
        return {y: -send_time_s(c, self.layers[a].output_bytes, link_gbps) / self.time_scale
                for (a, qq, rr), y in self.y.items() if (qq, rr) == (q, r)}

    def _compute_terms(self, q: int, tflops: float, device: Device | None = None) -> dict[int, float]:
        """-(time of each layer at position q on a device of `tflops`, or on `device` with its
        kind's per-layer times where the problem gives them), on its x[i, q]."""
        k = work_factor(self.setup)
        return {int(self.x[i, q]): -stage_compute_s(k, layer.flops, tflops, None if device is None else
                                                    timed_sum_s(self.problem, device, (i,))) / self.time_scale
                for i, layer in enumerate(self.layers)}

    def _balance_cut(self) -> None:
        """A valid cut that needs no big-M and tightens the LP bound: the slowest stage
        is no faster than a perfect balance over all devices together."""
        if self.problem.layer_times:
            bound = lower_bound_s(self.problem) / self.setup.micro_batches / self.time_scale
            self._row({self.tau: 1.0}, bound, np.inf)
            return
        total = work_factor(self.setup) * sum(layer.flops for layer in self.layers) / TFLOP / self.time_scale
        self._row({self.tau: 1.0}, total / sum(device.tflops for device in self.devices), np.inf)

    def _fastest_device_cut(self, q: int) -> None:
        """A valid cut without big-M: no device computes position q faster than the fastest."""
        if self.problem.layer_times:
            k = work_factor(self.setup)
            fastest_s = [min(times) for times in zip(*(layer_forward_s(self.problem, d) for d in self.devices))]
            terms = {int(self.x[i, q]): -k * fastest_s[i] / self.time_scale for i in range(len(self.layers))}
            self._row({int(self.t[q]): 1.0} | terms, 0, np.inf)
            return
        fastest = max(device.tflops for device in self.devices)
        self._row({int(self.t[q]): 1.0} | self._compute_terms(q, fastest), 0, np.inf)

    def _stage_time_row(self, q: int, d: int) -> None:
        """t[q] >= compute of q's layers on device d plus q's sends, when q runs on d."""
        row = {int(self.t[q]): 1.0, int(self.z[q, d]): -_BIG_M}
        row.update(self._compute_terms(q, self.devices[d].tflops, self.devices[d]))
        for (sender, _receiver), var in self.r.items():
            if sender == q:
                row[var] = row.get(var, 0.0) - 1.0
        self._row(row, -_BIG_M, np.inf)
