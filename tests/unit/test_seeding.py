"""anomalib's CLI only: `--seed_everything` applied and one-line errors; any other program keeps its global state."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from jsonargparse import Namespace

from anomalib_repair import seeding

SRC = Path(__file__).resolve().parents[2] / "src"


class _FakeCli:
    def __init__(self, seed: object) -> None:
        self.config = Namespace(subcommand="train", train=Namespace(seed_everything=seed))


@pytest.mark.parametrize(("value", "expected"), [(7, 7), (0, 0), (True, None), (False, None), (None, None)])
def test_only_an_integer_seed_is_applied(value: object, expected: int | None) -> None:
    assert seeding.cli_seed(_FakeCli(value)) == expected


def test_applying_the_cli_seed_seeds_every_generator() -> None:
    assert seeding.apply_cli_seed(_FakeCli(11)) == 11
    first = random.random()
    assert seeding.apply_cli_seed(_FakeCli(11)) == 11
    assert random.random() == first
    state = random.getstate()
    assert seeding.apply_cli_seed(_FakeCli(None)) is None
    assert random.getstate() == state


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_importing_the_package_in_a_script_changes_no_global_state() -> None:
    code = (
        "import sys, random\n"
        "import anomalib.cli.cli as cli\n"  # (anomalib's CLI module installs rich's hook itself)
        "hook = sys.excepthook\n"
        "hook_before = cli.AnomalibCLI.before_instantiate_classes\n"
        "state = random.getstate()\n"
        "import anomalib_repair\n"
        "print(sys.excepthook is hook, cli.AnomalibCLI.before_instantiate_classes is hook_before,"
        " random.getstate() == state)\n"
    )
    assert _python(code) == "True True True"


def test_inside_anomalibs_cli_errors_are_one_line_and_the_seed_is_applied() -> None:
    code = (
        "import sys, random\n"
        "from anomalib.cli.cli import main, AnomalibCLI\n"  # what anomalib's console script does in __main__
        "hook = sys.excepthook\n"
        "import anomalib_repair\n"
        "cli = AnomalibCLI.__new__(AnomalibCLI)\n"
        "from jsonargparse import Namespace\n"
        "cli.config = Namespace(subcommand='fit', fit=Namespace(seed_everything=5))\n"
        "AnomalibCLI.before_instantiate_classes(cli)\n"
        "first = random.random()\n"
        "random.seed(5)\n"
        "print(sys.excepthook is not hook, first == random.random())\n"
    )
    assert _python(code) == "True True"
