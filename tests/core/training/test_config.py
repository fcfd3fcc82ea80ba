"""The training config: validation, defaults fixed at creation, the learning rate plan."""

import pytest

from core.errors import InputError
from core.model.config import GPTSize
from core.training.config import TrainConfig
from core.training.engine.optim import learning_rate_at


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -1}, {"steps": 2.5}, {"engine": "ray"},
                                 {"learning_rate": 0.0}, {"min_learning_rate": 1.0}, {"val_fraction": 0.7},
                                 {"node_rank": 2, "nnodes": 2}, {"grad_clip": float("nan")}])
def test_bad_settings_are_one_line_input_errors(bad):
    with pytest.raises(InputError) as error:
        TrainConfig(**bad)
    assert "\n" not in str(error.value)


def test_the_config_round_trips_through_json_shapes():
    config = TrainConfig(model="custom", custom=GPTSize(layers=2, d_model=64, heads=2, vocab=256, seq=256), steps=30).resolved()
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_warmup_then_cosine_then_the_floor():
    config = TrainConfig(steps=100, learning_rate=1.0, min_learning_rate=0.1).resolved()
    assert (config.warmup_steps, config.lr_decay_steps) == (10, 100)
    rates = [learning_rate_at(step, config) for step in range(1, 121)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)  # linear warmup
    assert all(a >= b for a, b in zip(rates[9:100], rates[10:100]))  # then down
    assert rates[54] == pytest.approx(0.55, abs=1e-2)  # halfway: the mean of peak and floor
    assert set(rates[99:]) == {0.1}


def test_extending_a_run_keeps_its_learning_rate_plan():
    config = TrainConfig(steps=200).resolved()
    longer = config.with_steps(300)
    assert [learning_rate_at(s, longer) for s in range(1, 201)] == [learning_rate_at(s, config) for s in range(1, 201)]
