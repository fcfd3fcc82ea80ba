"""Model names as people type them: any case, a "did you mean", each preset listed once, natural order."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from core.model.model_spec import resolve_model
from core.model.presets import all_preset_names, hf_preset_names, natural_key


def test_model_names_are_case_insensitive_like_device_names():
    assert resolve_model("LLaMA-2-7B").name == "llama-2-7b"
    assert resolve_model("GPT-Nano").name == "gpt-nano"
    assert resolve_model("HF/GPT2-XL").name == "hf/gpt2-xl"
    assert resolve_model("gpt2-xl").gpt is not None  # the built-in GPT keeps the plain name


def test_an_unknown_name_suggests_the_closest_and_lists_each_preset_once():
    with pytest.raises(InputError) as error:
        resolve_model("lama-2-7b")
    message = str(error.value)
    assert message.startswith("unknown model 'lama-2-7b' (did you mean llama-2-7b")
    known = message.split("known: ")[1].split(", a config.json path")[0].split(", ")
    assert len(known) == len(set(known)) and known.count("gpt2-xl") == 1 and "hf/gpt2-xl" in known
    assert "did you mean" not in str(pytest.raises(InputError, resolve_model, "zzzz").value)


def test_model_lists_sort_numbers_as_numbers():
    names = hf_preset_names()
    llama = [name for name in names if name.startswith("llama-2-")]
    assert llama == ["llama-2-7b", "llama-2-13b", "llama-2-70b"]
    assert sorted(["x-70b", "x-7b", "x-13b"], key=natural_key) == ["x-7b", "x-13b", "x-70b"]
    assert all_preset_names()[:2] == ["gpt-nano", "gpt-micro"]


@pytest.mark.parametrize("name", ["gpt-nano", "llama-2-7b", "hf/gpt2-xl"])
def test_a_model_handed_on_as_its_identity_is_the_same_model(name):
    """A process handed a model as JSON (accelerate's placing process) rebuilds the same model: the
    same identity, which every disk cache keys on."""
    from core.model.model_spec import ModelSpec

    spec = resolve_model(name)
    again = ModelSpec.from_identity(json.loads(json.dumps(spec.identity())))
    assert again.identity() == spec.identity() and again.name == spec.name and again.gpt == spec.gpt
