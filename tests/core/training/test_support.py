"""The shared training fixtures are themselves deterministic."""

from tests.core.training.support import write_corpus


def test_the_corpus_is_the_same_every_time(tmp_path):
    first = write_corpus(tmp_path / "a.txt").read_bytes()
    second = write_corpus(tmp_path / "b.txt").read_bytes()
    assert first == second and len(first) > 100_000
