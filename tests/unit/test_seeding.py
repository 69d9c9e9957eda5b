"""`--seed_everything` of anomalib's CLI, read from its parsed config and applied once per CLI object."""

from __future__ import annotations

import random

import pytest
from jsonargparse import Namespace

from anomalib_repair import seeding


class _FakeCli:
    def __init__(self, seed: object) -> None:
        self.config = Namespace(subcommand="train", train=Namespace(seed_everything=seed))

    def build(self) -> int | None:
        return seeding.apply_cli_seed()


@pytest.fixture
def fake_cli_class(monkeypatch: pytest.MonkeyPatch) -> None:
    import anomalib.cli.cli as cli_module

    monkeypatch.setattr(cli_module, "AnomalibCLI", _FakeCli)


@pytest.mark.parametrize(("value", "expected"), [(7, 7), (0, 0), (True, None), (False, None), (None, None)])
def test_only_an_integer_seed_is_applied(value: object, expected: int | None) -> None:
    assert seeding.cli_seed(_FakeCli(value)) == expected


def test_outside_the_cli_nothing_is_seeded() -> None:
    state = random.getstate()
    assert seeding.apply_cli_seed() is None
    assert random.getstate() == state


def test_the_cli_seed_is_applied_once_per_cli(fake_cli_class: None) -> None:
    cli = _FakeCli(11)
    assert cli.build() == 11
    first = random.random()
    assert cli.build() is None  # a second class built by the same CLI does not re-seed
    assert random.random() != first
    assert _FakeCli(11).build() == 11
    assert random.random() == first
