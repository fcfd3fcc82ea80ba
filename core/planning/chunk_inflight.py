"""How many micro-batches' activations each chunk of a rank holds at once, in torch's order.

A rank of a chunked schedule holds, at any moment of its step, n_c micro-batches'
activations of its chunk c (c = 0 .. v - 1: chunk c of rank r is virtual stage
c * p + r, or r and 2p - 1 - r for the V). With A_c the activation bytes of chunk
c per micro-batch, its activation memory peaks at max over moments of
sum_c n_c A_c, and only the moments whose counts no other moment's exceed can be
the peak: `held_vectors` gives those count vectors (docs/design.md, "Chunked
schedules"). With equal chunks this is the total's peak; with unequal chunks the
chunk sizes decide which moment is the peak, and so a rank can hold small chunks
where many micro-batches wait and large ones where few do.

Counts follow torch 2.13's own per-rank order: a forward adds its micro-batch to
its chunk; a full backward (interleaved) or a weight backward (zero-bubble family:
the weight gradient still needs the saved inputs) frees it. The zero-bubble
family splits the backward: from a micro-batch's input backward (I) to its
weight backward (W) the chunk also keeps the gradients of its weighted ops'
outputs, which W consumes (torch's `stage_backward_input` stores them), so a
moment is 2v counts: held per chunk, then pending (I done, W not) per chunk.
The looped schedules' order is torch's `_get_1f1b_rank_ops` (warm-up forwards,
then a forward and a backward per op, then the cool-down backwards; ZB1P's
weight backwards start after `rank` steady ops and trail its input backwards);
ZBV follows a closed form and DualPipeV torch's own construction, step by
step. tests/core/planning/test_chunked_schedules.py checks every one against
torch's order (`_schedule_visualizer.get_schedule_ops`). Pure Python: the
planner imports no torch.
"""

from __future__ import annotations

import functools

Counts = tuple[int, ...]  # micro-batches held per chunk, chunk 0 first, then those pending a weight backward


def rounds_of(per_replica: int, ranks: int) -> int:
    """torch's rounds of an interleaved step: max(1, m' // p) (m' must be a multiple of it)."""
    return max(1, per_replica // ranks)


@functools.lru_cache(maxsize=4096)
def looped_held(ranks: int, per_replica: int, chunks: int, rank: int, zero_bubble: bool) -> tuple[Counts, ...]:
    """Interleaved 1F1B (zero_bubble False) and ZB1P (True): the undominated count vectors of `rank`."""
    p, m, v = ranks, per_replica, chunks
    per_round = m // rounds_of(m, p)
    total = m * v
    warmup = min((v - 1) * per_round + (1 if zero_bubble else 2) * (p - 1 - rank), total)
    held, pending = [0] * v, [0] * v
    moments: list[Counts] = []
    backwards: list[int] = []  # chunks of the (input) backwards done, in order
    weights = 0

    def forward(op: int) -> None:
        held[(op // per_round) % v] += 1
        moments.append((*held, *pending))

    def backward(op: int) -> None:
        nonlocal weights
        chunk = v - 1 - ((op - warmup) // per_round) % v
        backwards.append(chunk)
        if not zero_bubble:
            held[chunk] -= 1
            return
        pending[chunk] += 1
        moments.append((*held, *pending))
        if op - warmup >= rank:  # torch's num_1f1b_microbatches = rank
            done = backwards[weights]
            held[done] -= 1
            pending[done] -= 1
            weights += 1

    for op in range(total + warmup):
        if op < total:
            forward(op)
        if op >= warmup:
            backward(op)
    return undominated(moments)


def v_shape_held(ranks: int, per_replica: int, rank: int, dual: bool) -> tuple[Counts, ...]:
    """ZBV (dual False) and DualPipeV (True): the undominated moments (n_r, n_2p-1-r, w_r, w_2p-1-r) of
    `rank` (chunks r and 2p - 1 - r held, then pending a weight backward).

    ZBV: (min(m', 2p - 1 - r), min(m', r + 1), 0, 1), (min(m', 2p - r), min(r, max(0, r - p + m')), 1, 0)
    and, where m' >= p, with k = min(p, m' - p + 1): (k, max(0, r - p + k), min(r + 1, k), max(0, r - p + k)).
    DualPipeV: torch's steps, walked.
    """
    p, m, r = ranks, per_replica, rank
    if dual:
        return _dualpipev_held(p, m, r)
    moments: list[Counts] = [(min(m, 2 * p - 1 - r), min(m, r + 1), 0, 1),
                             (min(m, 2 * p - r), min(r, max(0, r - p + m)), 1, 0)]
    k = min(p, m - p + 1)
    if k >= 1:
        late = max(0, r - p + k)
        moments.append((k, late, min(r + 1, k), late))
    return undominated(moments)


@functools.lru_cache(maxsize=1024)
def _dualpipev_held(p: int, m: int, r: int) -> tuple[Counts, ...]:
    """DualPipeV's moments for rank r, walking torch 2.13's ScheduleDualPipeV construction: its eight
    steps of forwards (F), full backwards (B), input backwards (I) and weight backwards (W, a queue
    of the input backwards done), chunk 0 being stage r and chunk 1 stage 2p - 1 - r."""
    held, pending = [0, 0], [0, 0]
    queue: list[int] = []
    moments: list[Counts] = []

    def act(kind: str, chunk: int) -> None:
        if kind == "F":
            held[chunk] += 1
        elif kind == "B":
            held[chunk] -= 1
        elif kind == "I":
            pending[chunk] += 1
            queue.append(chunk)
        moments.append((*held, *pending))

    def weight() -> None:
        if queue:
            chunk = queue.pop(0)
            held[chunk] -= 1
            pending[chunk] -= 1

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
    return undominated(moments)


def undominated(moments: list[Counts]) -> tuple[Counts, ...]:
    """The count vectors no other exceeds in every chunk (the only candidates for a peak), sorted."""
    unique = set(moments)
    return tuple(sorted(counts for counts in unique if not any(
        other != counts and all(a >= b for a, b in zip(other, counts)) for other in unique)))


def peak_bytes(held: tuple[Counts, ...], chunk_bytes: list[float] | tuple[float, ...],
               pending_bytes: list[float] | tuple[float, ...] | None = None) -> tuple[float, Counts]:
    """The most bytes a rank holds at once, and the moment (counts) at which it does (the first on
    ties): each held micro-batch its chunk's activations, each pending one also its chunk's
    `pending_bytes` (the output gradients kept from input to weight backward; none when None)."""
    v = len(chunk_bytes)
    weights = (*chunk_bytes, *(pending_bytes if pending_bytes is not None else (0.0,) * v))
    best = max(held, key=lambda counts: sum(n * a for n, a in zip(counts, weights)))
    return sum(n * a for n, a in zip(best, weights)), best
