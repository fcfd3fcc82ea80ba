"""What the two dynamic programs under caps share (chain_dp for one device a stage,
hybrid_program for a group of d devices a stage).

Both build plans from the back: a state summarises the suffix plans that use some
devices (counts per class) and whose first stage has some link class. For a batch
of caps, a state's value is, per start layer, the least sum of stage times of such
a suffix whose stages all meet the caps. `Trace` keeps the values (and, when asked,
how each was reached); `extend` puts one more stage in front of a state's plans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Counts = tuple[int, ...]
StateKey = tuple[Counts, int]  # (devices used per class, link class of the first stage)


@dataclass(frozen=True)
class Choice:
    """How a state's value was reached, per start layer: the first stage's
    device class (or group type) and end, and the state that follows (-1: none)."""

    first: np.ndarray
    end: np.ndarray
    rest: np.ndarray

    def merged(self, other: Choice, take_other: np.ndarray) -> Choice:
        return Choice(*(np.where(take_other, b, a) for a, b in
                        ((self.first, other.first), (self.end, other.end), (self.rest, other.rest))))


def last_stage(kind: int, n: int) -> Choice:
    """A stage on `kind` that runs to the last layer, with nothing after it."""
    return Choice(np.full(n + 1, kind), np.full(n + 1, n), np.full(n + 1, -1))


class Trace:
    """DP values per state, and (when tracking) how each was reached."""

    def __init__(self) -> None:
        self.value: dict[StateKey, np.ndarray] = {}
        self.choice: dict[StateKey, Choice] = {}
        self.order: dict[StateKey, int] = {}
        self.sources: list[StateKey] = []

    def source_index(self, key: StateKey) -> int:
        self.sources.append(key)
        return len(self.sources) - 1

    def offer(self, key: StateKey, value: np.ndarray, choice: Choice | None, track: bool) -> None:
        old = self.value.get(key)
        if old is None:
            self.value[key] = value
            self.order[key] = len(self.order)
            if track and choice is not None:
                self.choice[key] = choice
            return
        better = value < old
        self.value[key] = np.where(better, value, old)
        if track and choice is not None:
            self.choice[key] = self.choice[key].merged(choice, better[0])

    def best_at_start(self, num_caps: int) -> np.ndarray:
        if not self.value:
            return np.full(num_caps, np.inf)
        return np.min(np.stack([v[:, 0] for v in self.value.values()]), axis=0)

    def best_stages(self) -> list[tuple[int, int, int]]:
        """The tracked plan from layer 0 with the least value under the first cap (ties:
        the state reached first): (device class or group type, first layer, end) per stage."""
        key: StateKey | None = min(self.order, key=lambda k: (self.value[k][0, 0], self.order[k]))
        stages = []
        start = 0
        while key is not None:
            choice = self.choice[key]
            end = int(choice.end[start])
            stages.append((int(choice.first[start]), start, end))
            rest = int(choice.rest[start])
            key = self.sources[rest] if rest >= 0 else None
            start = end
        return stages


@dataclass(frozen=True)
class Front:
    """One more stage to put in front of a state's plans, on each of `kinds`.

    `times[k, j, e]` is the stage [starts[j], ends[e]) on kinds[k]; `meets[k, q, j, e]`
    whether it meets cap q; `keys[k]` the state the longer plans make.
    """

    kinds: tuple[int, ...]
    keys: list[StateKey]
    times: np.ndarray
    meets: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def extend(trace: Trace, key: StateKey, rest: np.ndarray, front: Front, track: bool) -> None:
    """Offer the plans `front` makes from `key`'s (whose values are `rest`) to their states."""
    n = rest.shape[1] - 1
    # totals[k, q, j, e]: stage [j, e) on kind k, then the rest from e, under cap q
    totals = np.where(front.meets, front.times[:, None] + rest[:, front.ends][None, :, None, :], np.inf)
    values = np.full((len(front.kinds), front.meets.shape[1], n + 1), np.inf)
    values[:, :, front.starts] = totals.min(axis=3)
    source = trace.source_index(key) if track else -1
    for slot, kind in enumerate(front.kinds):
        choice = None
        if track:
            end = np.zeros(n + 1, dtype=int)
            end[front.starts] = front.ends[totals[slot, 0].argmin(axis=1)]
            choice = Choice(np.full(n + 1, kind), end, np.full(n + 1, source))
        trace.offer(front.keys[slot], values[slot], choice, track)
