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
the weight gradient still needs the saved inputs) frees it. The looped schedules'
order is torch's `_get_1f1b_rank_ops` (warm-up forwards, then a forward and a
backward per op, then the cool-down backwards; ZB1P's weight backwards start after
`rank` steady ops and trail its input backwards); ZBV and DualPipeV follow their
closed forms. tests/core/planning/test_chunked_schedules.py checks every one
against torch's order (`_schedule_visualizer.get_schedule_ops`). Pure Python: the
planner imports no torch.
"""

from __future__ import annotations

import functools

Counts = tuple[int, ...]  # micro-batches held per chunk, chunk 0 first


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
    held = [0] * v
    moments: list[Counts] = []
    backwards: list[int] = []  # chunks of the (input) backwards done, in order
    weights = 0

    def forward(op: int) -> None:
        held[(op // per_round) % v] += 1
        moments.append(tuple(held))

    def backward(op: int) -> None:
        nonlocal weights
        chunk = v - 1 - ((op - warmup) // per_round) % v
        backwards.append(chunk)
        if not zero_bubble:
            held[chunk] -= 1
        elif op - warmup >= rank:  # torch's num_1f1b_microbatches = rank
            held[backwards[weights]] -= 1
            weights += 1

    for op in range(total + warmup):
        if op < total:
            forward(op)
        if op >= warmup:
            backward(op)
    return undominated(moments)


def v_shape_held(ranks: int, per_replica: int, rank: int, dual: bool) -> tuple[Counts, ...]:
    """ZBV (dual False) and DualPipeV (True): the undominated count vectors of `rank` (chunks r, 2p - 1 - r).

    ZBV: (min(m', 2p - 1 - r), min(m', r + 1)) and (min(m', 2p - r), min(m', r));
    DualPipeV (m' >= 2p): (2p - r, r + 1).
    """
    p, m = ranks, per_replica
    if dual:
        return ((min(m, 2 * p - rank), min(m, rank + 1)),)
    return undominated([(min(m, 2 * p - 1 - rank), min(m, rank + 1)), (min(m, 2 * p - rank), min(m, rank))])


def undominated(moments: list[Counts]) -> tuple[Counts, ...]:
    """The count vectors no other exceeds in every chunk (the only candidates for a peak), sorted."""
    unique = set(moments)
    return tuple(sorted(counts for counts in unique if not any(
        other != counts and all(a >= b for a, b in zip(other, counts)) for other in unique)))


def peak_bytes(held: tuple[Counts, ...], chunk_bytes: list[float] | tuple[float, ...]) -> tuple[float, Counts]:
    """The most activation bytes a rank holds, and the counts at that moment (the first on ties)."""
    best = max(held, key=lambda counts: sum(n * a for n, a in zip(counts, chunk_bytes)))
    return sum(n * a for n, a in zip(best, chunk_bytes)), best
