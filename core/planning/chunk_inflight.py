"""How many micro-batches' activations each chunk of a rank holds at once, in torch's order.

A rank of a chunked schedule holds, at any moment of its step, n_c micro-batches'
activations of its chunk c (c = 0 .. v - 1: chunk c of rank r is virtual stage
c * p + r, or r and 2p - 1 - r for the V). With A_c the activation bytes of chunk c
per micro-batch, its activation memory peaks at max over moments of sum_c n_c A_c,
and only the moments whose counts no other moment's exceed can be the peak:
`undominated` keeps those (docs/design.md, "Chunked schedules"). With equal chunks
this is the total's peak; with unequal chunks the chunk sizes decide which moment
is the peak, and so a rank can hold small chunks where many micro-batches wait and
large ones where few do.

Counts follow torch 2.13's own per-rank order: a forward adds its micro-batch to
its chunk; a full backward (interleaved) or a weight backward (zero-bubble family:
the weight gradient still needs the saved inputs) frees it. The zero-bubble family
splits the backward: from a micro-batch's input backward (I) to its weight
backward (W) the chunk also keeps the gradients of its weighted ops' outputs,
which W consumes (torch's `stage_backward_input` stores them), so a moment is 3v
counts: held per chunk, then pending (I done, W not) per chunk, then whether the
chunk's weight gradients exist yet (0 or 1: set by its first full or weight
backward, held to the optimizer step). The looped schedules' order is torch's
`_get_1f1b_rank_ops` (warm-up forwards, then a forward and a backward per op, then
the cool-down backwards; ZB1P's weight backwards start after `rank` steady ops and
trail its input backwards); ZBV, DualPipeV and looped BFS walk torch's own
construction, step by step. tests/core/planning/test_chunked_schedules.py checks
every one against torch's order (`_schedule_visualizer.get_schedule_ops`). Python and
numpy: the planner imports no torch.
"""

from __future__ import annotations

import functools

import numpy as np

Counts = tuple[int, ...]  # per chunk, chunk 0 first: micro-batches held, then pending a weight backward, then graded


def rounds_of(per_replica: int, ranks: int) -> int:
    """torch's rounds of an interleaved step: max(1, m' // p) (m' must be a multiple of it)."""
    return max(1, per_replica // ranks)


class _Walk:
    """A rank's counts through its actions: after each, the moment (held, pending, graded per chunk)."""

    def __init__(self, chunks: int):
        self.held, self.pending, self.graded = [0] * chunks, [0] * chunks, [0] * chunks
        self.moments: list[Counts] = []

    def _note(self) -> None:
        self.moments.append((*self.held, *self.pending, *self.graded))

    def forward(self, chunk: int) -> None:
        self.held[chunk] += 1
        self._note()

    def full_backward(self, chunk: int) -> None:
        self.held[chunk] -= 1
        self.graded[chunk] = 1  # its weight gradients now exist, until the optimizer step
        self._note()

    def input_backward(self, chunk: int) -> None:
        self.pending[chunk] += 1
        self._note()

    def weight_backward(self, chunk: int) -> None:
        self.held[chunk] -= 1
        self.pending[chunk] -= 1
        self.graded[chunk] = 1
        self._note()


@functools.lru_cache(maxsize=4096)
def looped_held(ranks: int, per_replica: int, chunks: int, rank: int, zero_bubble: bool) -> tuple[Counts, ...]:
    """Interleaved 1F1B (zero_bubble False) and ZB1P (True): the undominated moments of `rank`."""
    p, m, v = ranks, per_replica, chunks
    per_round = m // rounds_of(m, p)
    total = m * v
    warmup = min((v - 1) * per_round + (1 if zero_bubble else 2) * (p - 1 - rank), total)
    walk = _Walk(v)
    backwards: list[int] = []  # chunks of the (input) backwards done, in order
    weights = 0
    for op in range(total + warmup):
        if op < total:
            walk.forward((op // per_round) % v)
        if op < warmup:
            continue
        chunk = v - 1 - ((op - warmup) // per_round) % v
        if not zero_bubble:
            walk.full_backward(chunk)
            continue
        backwards.append(chunk)
        walk.input_backward(chunk)
        if op - warmup >= rank:  # torch's num_1f1b_microbatches = rank
            walk.weight_backward(backwards[weights])
            weights += 1
    for chunk in backwards[weights:]:  # the cool-down's weight backwards
        walk.weight_backward(chunk)
    return undominated(walk.moments)


@functools.lru_cache(maxsize=1024)
def looped_bfs_held(per_replica: int, chunks: int) -> tuple[Counts, ...]:
    """Looped BFS: every micro-batch forward through each chunk in turn, then backward, last chunk first."""
    walk = _Walk(chunks)
    for chunk in range(chunks):
        for _ in range(per_replica):
            walk.forward(chunk)
    for chunk in reversed(range(chunks)):
        for _ in range(per_replica):
            walk.full_backward(chunk)
    return undominated(walk.moments)


def v_shape_held(ranks: int, per_replica: int, rank: int, dual: bool) -> tuple[Counts, ...]:
    """ZBV (dual False) and DualPipeV (True): the undominated moments of `rank` (chunk 0 is stage r,
    chunk 1 stage 2p - 1 - r), walking torch 2.13's construction of its order."""
    return _dualpipev_held(ranks, per_replica, rank) if dual else _zbv_held(ranks, per_replica, rank)


@functools.lru_cache(maxsize=1024)
def _zbv_held(p: int, m: int, r: int) -> tuple[Counts, ...]:
    """ScheduleZBVZeroBubble's order for rank r: warm-up forwards (2 (p - r) - 1 of chunk 0, then r
    pairs, then p - r of chunk 1 each with its input and weight backward), a steady F0 I0 W0 F1 I1 W1,
    and a cool-down of input backwards whose weight backwards trail (chunk 1's first). torch builds it
    for max(2p - 1, m') micro-batches and drops the actions on those past m'."""
    walk = _Walk(2)
    done = {kind: [0, 0] for kind in "FIW"}  # actions built so far, per kind and chunk: the micro-batch index

    def act(kind: str, chunk: int) -> None:
        index = done[kind][chunk]
        done[kind][chunk] += 1
        if index < m:
            {"F": walk.forward, "I": walk.input_backward, "W": walk.weight_backward}[kind](chunk)

    n = max(2 * p - 1, m)
    for _ in range(2 * (p - r) - 1):
        act("F", 0)
    for _ in range(r):
        act("F", 1)
        act("F", 0)
    for _ in range(p - r):
        act("F", 1)
        act("I", 1)
        act("W", 1)
    while done["F"][1] < done["F"][0] or done["F"][0] < n:
        if done["F"][0] < n:
            act("F", 0)
        act("I", 0)
        act("W", 0)
        act("F", 1)
        act("I", 1)
        act("W", 1)
    for _ in range(r):
        act("I", 0)
        act("I", 1)
    for _ in range(p - r):
        act("I", 0)
        act("W", 0)
    while done["W"][1] < done["I"][1]:
        act("W", 1)
    while done["W"][0] < done["I"][0]:
        act("W", 0)
    return undominated(walk.moments)


@functools.lru_cache(maxsize=1024)
def _dualpipev_held(p: int, m: int, r: int) -> tuple[Counts, ...]:
    """DualPipeV's moments for rank r, walking torch 2.13's ScheduleDualPipeV construction: its eight
    steps of forwards (F), full backwards (B), input backwards (I) and weight backwards (W, a queue
    of the input backwards done)."""
    walk = _Walk(2)
    queue: list[int] = []

    def act(kind: str, chunk: int) -> None:
        if kind == "F":
            walk.forward(chunk)
        elif kind == "B":
            walk.full_backward(chunk)
        else:
            walk.input_backward(chunk)
            queue.append(chunk)

    def weight() -> None:
        if queue:
            walk.weight_backward(queue.pop(0))

    for _ in range((p - r - 1) * 2):  # 1: F0
        act("F", 0)
    for _ in range(r + 1):  # 2: F0 F1
        act("F", 0)
        act("F", 1)
    for _ in range(p - r - 1):  # 3: I1 W F1
        act("I", 1)
        weight()
        act("F", 1)
    for _ in range(m - 2 * p + r + 1):  # 4: F0 B1, F1 B0 (overlapped)
        act("F", 0)
        act("B", 1)
        act("F", 1)
        act("B", 0)
    for _ in range(p - r - 1):  # 5: B1, F1 B0
        act("B", 1)
        act("F", 1)
        act("B", 0)
    split = False  # 6: B1 B0, the second half split into input and weight backwards
    steps = r + 1
    for i in range(steps):
        split = split or (i == steps // 2 and r % 2 == 1)
        act("I" if split else "B", 1)
        split = split or (i == steps // 2 and r % 2 == 0)
        act("I" if split else "B", 0)
    for _ in range(p - r - 1):  # 7: W B0
        weight()
        act("I" if split else "B", 0)
    for _ in range(r + 1):  # 8: W
        weight()
    return undominated(walk.moments)


def undominated(moments: list[Counts]) -> tuple[Counts, ...]:
    """The count vectors no other exceeds in every chunk (the only candidates for a peak), sorted:
    all pairs compared at once (a walk has hundreds of moments at m' = 32)."""
    unique = np.unique(np.asarray(moments, dtype=np.int64), axis=0)  # sorted, each once
    covers = np.asarray((unique[:, None, :] >= unique[None, :, :]).all(axis=2))  # [i, j]: i >= j everywhere
    np.fill_diagonal(covers, False)
    return tuple(tuple(int(n) for n in row) for row in unique[~covers.any(axis=0)])


def peak_bytes(held: tuple[Counts, ...], chunk_bytes: list[float] | tuple[float, ...],
               pending_bytes: list[float] | tuple[float, ...] | None = None,
               grad_bytes: list[float] | tuple[float, ...] | None = None) -> tuple[float, Counts]:
    """The most bytes a rank holds at once, and the moment (counts) at which it does (the first on
    ties): each held micro-batch its chunk's activations, each pending one also its chunk's
    `pending_bytes` (the output gradients kept from input to weight backward), and each chunk whose
    weight gradients exist its `grad_bytes` (none where None)."""
    v = len(chunk_bytes)
    none = (0.0,) * v
    weights = (*chunk_bytes, *(pending_bytes if pending_bytes is not None else none),
               *(grad_bytes if grad_bytes is not None else none))
    best = max(held, key=lambda counts: sum(n * a for n, a in zip(counts, weights)))
    return sum(n * a for n, a in zip(best, weights)), best
