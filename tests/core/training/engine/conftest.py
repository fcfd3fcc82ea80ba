"""Fixtures of the engine tests: a corpus and a tiny llama folder, one of each per module (a module
that needs other ones defines its own)."""

import pytest

from tests.core.training.engine.hf_support import save_model, tiny_llama_config
from tests.core.training.support import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", lines=800)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_model(tiny_llama_config(), tmp_path_factory.mktemp("models") / "tiny-llama")
