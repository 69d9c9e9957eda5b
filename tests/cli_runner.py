"""Run the real ``anomalib`` console script in a subprocess, as a user would, with this checkout's package first.

- :func:`offline_env` is the environment of every such subprocess (``HF_HUB_OFFLINE=1``, this checkout first);
- :func:`run_cli` runs ``anomalib ARGS`` in it and returns the finished process;
- :func:`parse_cli_commands` parses many argument lists with anomalib's CLI class in one interpreter
  (``integration/parse_commands.py``) and returns each outcome;
- :func:`checkpoint_only_env` is the extra environment of a run that has nothing but the checkpoint (no network, the
  packaged backbone weights hidden: ``checkpoint_only.guard_folder``);
- :func:`read_table` reads a ``per_category_metrics.csv`` as ``{category: row}``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from checkpoint_only import guard_folder

ANOMALIB = Path(sys.executable).parent / "anomalib"
SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's package, before any installed copy
PARSER = Path(__file__).resolve().parent / "integration" / "parse_commands.py"


def pythonpath() -> str:
    """``PYTHONPATH`` with this checkout's ``src`` first."""
    return os.pathsep.join(part for part in (str(SRC), os.environ.get("PYTHONPATH", "")) if part)


def offline_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, offline (``HF_HUB_OFFLINE=1``), this checkout first, then ``extra_env``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath(), **(extra_env or {})}


def run_cli(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``anomalib *args`` in ``cwd``; the output is captured, the exit code is the caller's to check."""
    return subprocess.run(
        [str(ANOMALIB), *args], cwd=cwd, env=offline_env(extra_env), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip


def parse_cli_commands(commands: list[list[str]], folder: Path, cwd: Path, env: dict[str, str]) -> list[dict]:
    """Each argument list parsed by ``AnomalibCLI(run=False)`` in one subprocess: ``{code, stdout, stderr}`` each."""
    (folder / "commands.json").write_text(json.dumps(commands))
    done = subprocess.run(
        [sys.executable, str(PARSER), str(folder / "commands.json"), str(folder / "results.json")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((folder / "results.json").read_text())


def checkpoint_only_env(folder: Path) -> dict[str, str]:
    """Environment of a subprocess with nothing but the checkpoint: no network, no packaged backbone weights."""
    return {"PYTHONPATH": os.pathsep.join((str(guard_folder(folder)), pythonpath()))}


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """A ``per_category_metrics.csv`` as ``{category: row}``."""
    with path.open() as handle:
        return {row["category"]: row for row in csv.DictReader(handle)}
