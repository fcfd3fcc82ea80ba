"""The tensor tracker counts each live storage once, frees it with its last tensor,
and gives each stage its own peak (docs/design.md, "Measured memory")."""

import torch

from core.training.engine.memory_tracker import (
    SHARED,
    TENSORS,
    StepMeter,
    TensorTracker,
    measures,
    stage_tensors,
)


def test_the_peak_counts_storages_once_and_drops_freed_ones():
    tracker = TensorTracker()
    with tracker:
        a = torch.empty(100)  # 400 bytes
        b = torch.empty(50)  # 200 bytes: 600 live, the peak
        view = b[10:]  # a view: no new storage
        del a  # 200 live
        c = torch.empty(25)  # 100 bytes: 300 live
    assert tracker.peak_bytes[0] == 600 and tracker.live_bytes[0] == 300
    del b, view, c
    assert tracker.live_bytes[0] == 0
    tracker.close()


def test_a_small_module_step_by_hand():
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3, bias=False)  # weight 3 x 4 fp32: 48 bytes
    x = torch.randn(2, 4)  # 32 bytes
    tracker = TensorTracker()
    tracker.register([*linear.parameters(), x])
    tracker.reset_peaks()
    assert tracker.peak_bytes[0] == 80
    with tracker:
        y = linear(x)  # 2 x 3: 24 bytes
        loss = y.pow(2).sum()  # the square (24 bytes) lives until sum has made the loss (4 bytes)
        assert tracker.live_bytes[0] == 80 + 24 + 4  # the square is freed
        assert tracker.peak_bytes[0] == 80 + 24 + 24 + 4
        loss.backward()
    assert tracker.live_bytes[0] == 80 + 24 + 4 + 48  # the weight's gradient, 48 bytes, stays
    tracker.close()


def test_frozen_parameters_are_counted_without_a_gradient():
    frozen = torch.nn.Linear(8, 8, bias=False).requires_grad_(False)  # 256 bytes, no gradient
    head = torch.nn.Linear(8, 2, bias=False)  # 64 bytes, and 64 of gradient
    model = torch.nn.Sequential(frozen, head)
    tracker = TensorTracker()
    tracker.register(stage_tensors(model))
    with tracker:
        model(torch.ones(1, 8)).sum().backward()
    assert tracker.live_bytes[0] == 256 + 64 + 64
    assert frozen.weight.grad is None
    tracker.close()


def test_each_stage_has_its_own_peak_and_shared_bytes_count_for_all():
    tracker = TensorTracker(labels=(0, 1))
    with tracker:
        with tracker.stage(0):
            a = torch.empty(100)  # stage 0: 400
        with tracker.stage(1):
            b = torch.empty(10)  # stage 1: 40
        with tracker.stage(SHARED):
            shared = torch.empty(5)  # 20, both stages
        del shared
    assert tracker.peak_bytes == {0: 420, 1: 60}
    tracker.register([b], label=0)  # handed over: stage 1 holds nothing now
    assert tracker.live_bytes[0] == 440 and tracker.live_bytes[1] == 0
    del a, b
    tracker.close()


def test_the_meter_tracks_the_first_steps_only_and_skips_the_first_when_it_can():
    assert [measures(step, first_step=4) for step in range(3, 9)] == [False, True, True, True, False, False]
    meter = StepMeter([torch.device("cpu")])
    held = [torch.empty(10)]  # 40 bytes before every step
    for step, size in [(1, 1000), (2, 100), (3, 200), (4, 5000)]:
        with meter.step(step, lambda: [held]) as tracker:
            temporary = torch.empty(size)
            del temporary
        assert (tracker is None) == (step == 4)
    readings = meter.readings()
    assert readings is not None and readings[0].source == TENSORS
    assert readings[0].peak_bytes == 40 + 4 * 200  # steps 2 and 3: step 1 and the untracked step 4 left out


def test_the_meter_keeps_no_gradient_alive_past_zero_grad():
    model = torch.nn.Linear(16, 16, bias=False)  # 1,024 bytes of weight, 1,024 of gradient
    model(torch.ones(1, 16)).sum().backward()  # last step's gradient exists before the step
    meter = StepMeter([torch.device("cpu")])
    with meter.step(1, lambda: [stage_tensors(model)]) as tracker:
        model.zero_grad(set_to_none=True)  # it is freed here...
        assert tracker is not None and tracker.live_bytes[0] == 1024  # ...and not held by the meter
