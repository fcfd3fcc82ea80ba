"""`main.py profile`: measure the model's forward + backward time as one block, and each layer's
on its own, on the real devices, and save a profile the planner can use instead of catalog speeds.

    python3 main.py profile --model gpt-nano --devices "2xcpu" --out nano-cpu.json
    python3 main.py plan --model gpt-nano --devices "2xcpu" --profile nano-cpu.json
    python3 main.py train --model gpt-nano --devices "2xcpu" --profile nano-cpu.json ...
    python3 main.py profile --model path/to/hf-model --devices "2xcpu" --seq-len 128 --out hf-cpu.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from cli.numbers import positive_int
from cli.train_command import add_model_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="measure the model's speed (as one block, and per layer) on the real devices",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--vocab", type=positive_int, default=256,
                        help="built-in GPT: vocabulary of the model measured (default 256: the byte-level "
                             "model train runs); HF models keep their own")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed passes per layer; the median is kept")
    parser.add_argument("--out", help="profile JSON to write (default profile-MODEL.json)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cli.train_command import build_model_and_setup
    from core.errors import InputError
    from core.planning.front_door import resolve_devices
    from core.training.launcher import TrainConfig, measure_profile, save_profile, trainable_model
    from core.units import MFLOP

    if args.repeats < 1:
        raise InputError(f"repeats must be 1 or more, got {args.repeats}")
    from core.planning.front_door import AUTO, resolve_choice
    from core.training.launcher import hf_source

    model, custom, setup = build_model_and_setup(args)
    if setup.recompute == AUTO:  # layer times are measured as asked; auto (the default) measures without
        setup = replace(setup, recompute=False)
    config = TrainConfig(model=model, custom=custom, setup=setup)
    spec = resolve_choice(config.model_choice)
    hf = hf_source(config, spec)  # an HF model is timed with its own vocabulary
    name, gpt = (spec.name, hf) if hf is not None else trainable_model(config, args.vocab)
    devices = resolve_devices(args.devices or "cpu", setup.precision)
    profile = measure_profile(name, gpt, setup, devices, repeats=args.repeats,
                              emit=lambda line: print(line, flush=True))
    out = args.out or f"profile-{name}.json"
    save_profile(profile, out)
    for device in profile.devices:
        overhead = device.per_call_overhead_s
        per_call = f" ({1000 * overhead:.3f} ms a layer of per-call cost)" if overhead is not None else ""
        print(f"{device.name}: {device.effective_tflops * 1000:.2f} GFLOP/s effective "
              f"({device.threads} threads), {1000 * (device.block_s or device.total_s):.2f} ms per micro-batch "
              f"forward + backward as one block; the layers one by one sum to {1000 * device.total_s:.2f} ms{per_call}")
        for layer in device.layers:
            print(f"  {layer.name:<8} {1000 * layer.fwd_bwd_s:8.3f} ms  {layer.flops / MFLOP:10.1f} MFLOP forward")
    print(f"wrote {out}; plan with it: python3 main.py plan ... --profile {out}")
    return 0
