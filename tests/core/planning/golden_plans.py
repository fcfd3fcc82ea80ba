"""Seeded random problems and every solver's plan on each, for the byte-identity test.

The cost model was refactored into one schedule object (core.planning.schedules);
golden_plans.json holds, per problem, the sha256 of the canonical JSON of every
solver's answer (Plan.to_dict() without solve_time_s, or the InputError text) as
the code gave it before the refactor; regenerated once on purpose since, when the
memory model became complete (issue 21: pipeline buffers, working memory, the
optimizer step, gradients from the first backward on), and again when the last stage's
logits became i · y_s and a later backward the gradient sent back (issue 21, item 3), and when a
ZeRO-3 later backward held the running unit's all-gather buffer beside every unit's copy-out (107 of
1,000 records changed). Floats are written by json as their
shortest round-trip repr, so equal hashes mean bit-identical numbers.

    python3 -m tests.core.planning.golden_plans --count 1000   # rewrite the golden file

Rewrite it only when a change to the plans is intended, and say why in the commit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.planning.problem import AUTO, Device, Layer, Problem, Setup
from core.planning.solvers import solve

GOLDEN = Path(__file__).with_name("golden_plans.json")
SEED = 20_2026
FULL_COUNT = 1_000
FULL_PLANS_KEPT = 12  # problems whose answers are stored whole, to show a difference when one appears
# (budget, TFLOP/s, GB/s) of a few device kinds: repeats make interchangeable device classes
KINDS = [(1.0, 100.0, 25.0), (0.7, 300.0, 50.0), (1.3, 50.0, 8.0), (0.5, 1000.0, 400.0)]
V1_SOLVERS = ("exact", "greedy", "uniform", "parameters", "fsdp", "ddp", "zero1", "megatron", "pipeline")
SPLITS = [(2.0, 2.0, 12.0), (4.0, 4.0, 8.0), (2.0, 4.0, 12.0), (2.0, 0.0, 0.0)]


def random_problem(index: int) -> tuple[Problem, tuple[str, ...]]:
    """Problem number `index` of the seeded series, and the solvers to run on it.

    A third are v1 chains, a half v2 chains (d fixed or auto, ZeRO 0..3) and
    the rest branching graphs for the MILP; budgets span from too small to
    ample, so some problems are infeasible.
    """
    rng = random.Random(f"{SEED}:{index}")
    kind = index % 6
    branching = kind == 5
    hybrid = kind in (2, 3, 4)
    layers = _layers(rng, branching)
    mode = "infer" if rng.random() < 0.25 else "train"
    m = rng.choice([1, 2, 3, 4, 6, 8, 12])
    count = rng.randint(1, 4 if branching else 6 if hybrid else 5)
    split = rng.choice(SPLITS[:3] if mode == "train" else SPLITS)
    setup: dict[str, Any] = {"mode": mode, "micro_batches": m, "schedule": rng.choice(["1f1b", "gpipe"]),
                             "recompute": mode == "train" and rng.random() < 0.2,
                             "tokens_per_micro_batch": rng.choice([None, 1024, 4096])}
    if hybrid or rng.random() < 0.5:
        setup.update(bytes_per_param=sum(split), weight_bytes_per_param=split[0], grad_bytes_per_param=split[1],
                     optimizer_bytes_per_param=split[2])
    else:
        setup["bytes_per_param"] = rng.choice([16.0, 18.0, 2.0, 12.0])
    if hybrid:
        divisors = [d for d in range(1, min(m, count) + 1) if m % d == 0]
        setup["data_parallel"] = AUTO if rng.random() < 0.4 else rng.choice(divisors)
        setup["zero"] = rng.choice([0, 1, 2, 3] if setup["data_parallel"] != 1 else [1, 2, 3])
    devices = _devices(rng, count, layers, float(setup["bytes_per_param"]))
    problem = Problem(tuple(layers), tuple(devices), Setup(**setup))
    if branching:
        solvers: tuple[str, ...] = ("milp", "greedy", "uniform", "parameters")
        if index % 4 == 1 and len(layers) <= 4 and count <= 3:  # small: HiGHS proves it far inside its time limit
            solvers += ("milp-any",)
    else:
        solvers = V1_SOLVERS + (("milp",) if not hybrid and index % 5 == 0 and len(layers) <= 6 else ())
    return problem, solvers


def _layers(rng: random.Random, branching: bool) -> list[Layer]:
    n = rng.randint(2, 5) if branching else rng.randint(1, 10)
    tie = n > 2 and rng.random() < 0.3
    base = rng.choice([10**6, 10**8, 10**9])
    layers = []
    for i in range(n):
        tied = tie and i in (0, n - 1)
        inputs = None
        if branching and i > 1 and rng.random() < 0.6:
            inputs = tuple(sorted({f"l{rng.randrange(i)}", f"l{i - 1}"}))
        layers.append(Layer(
            name=f"l{i}", params=rng.choice([0, base, rng.randint(base // 2, 2 * base)]) + (10**8 if tied else 0),
            flops=rng.choice([0.0, rng.uniform(0, 4e12), float(rng.randint(1, 8)) * 1e11, 1e12]),
            activation_bytes=rng.choice([0, rng.randint(1, 4 * 10**7)]), output_bytes=rng.randint(0, 2 * 10**8),
            tied_group="w" if tied else None, tied_params=10**8 if tied else 0, inputs=inputs))
    return layers


def _devices(rng: random.Random, count: int, layers: list[Layer], bytes_per_param: float) -> list[Device]:
    need = bytes_per_param * sum(layer.params for layer in layers) + 4 * sum(layer.activation_bytes for layer in layers)
    scale = max(need, 1.0) / count * rng.choice([0.5, 1.0, 1.2, 1.5, 2.0, 3.0, 8.0])
    kinds = rng.sample(KINDS, rng.randint(1, 3))
    devices = []
    for i in range(count):
        budget, tflops, gbps = rng.choice(kinds)
        devices.append(Device(name=f"g{i}", budget_bytes=int(budget * scale),
                              tflops=tflops, bandwidth_gbps=gbps))
    return devices


def answers(problem: Problem, solvers: tuple[str, ...]) -> dict[str, Any]:
    """Every solver's answer without its solve time, or the error it raised."""
    result: dict[str, Any] = {}
    for name in solvers:
        try:
            if name == "milp-any":
                plan = solve(problem, "milp", contiguous=False)
            else:
                plan = solve(problem, name)
        except InputError as error:
            result[name] = f"InputError: {error}"
            continue
        answer = plan.to_dict()
        answer.pop("solve_time_s")
        result[name] = answer
    return result


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def answers_of(index: int) -> dict[str, Any]:
    problem, solvers = random_problem(index)
    return {"problem": problem.to_dict(), "answers": answers(problem, solvers)}


def write_golden(count: int) -> None:
    hashes, full = [], {}
    for index in range(count):
        record = answers_of(index)
        for name, answer in record["answers"].items():  # a time limit reached would make the answer timing-dependent
            assert not name.startswith("milp") or isinstance(answer, str) or answer.get("gap") in (0.0, None), index
            assert "within" not in str(answer), index
        hashes.append(digest(record))
        if index < FULL_PLANS_KEPT:
            full[str(index)] = record
    GOLDEN.write_text(json.dumps({"seed": SEED, "count": count, "sha256": hashes, "full": full},
                                 indent=0, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=FULL_COUNT)
    write_golden(parser.parse_args().count)


if __name__ == "__main__":
    main()
