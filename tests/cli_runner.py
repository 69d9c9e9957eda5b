"""Run the real ``anomalib`` console script in a subprocess, as a user would, with this checkout's package first.

- :func:`run_cli` runs ``anomalib ARGS`` (offline: ``HF_HUB_OFFLINE=1``) and returns the finished process;
- :func:`checkpoint_only_env` is the extra environment of a run that has nothing but the checkpoint (no network, the
  packaged backbone weights hidden: ``checkpoint_only.guard_folder``);
- :func:`read_table` reads a ``per_category_metrics.csv`` as ``{category: row}``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from checkpoint_only import guard_folder

ANOMALIB = Path(sys.executable).parent / "anomalib"
SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's package, before any installed copy


def pythonpath() -> str:
    """``PYTHONPATH`` with this checkout's ``src`` first."""
    return os.pathsep.join(part for part in (str(SRC), os.environ.get("PYTHONPATH", "")) if part)


def run_cli(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``anomalib *args`` in ``cwd``; the output is captured, the exit code is the caller's to check."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath(), **(extra_env or {})}
    return subprocess.run(
        [str(ANOMALIB), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def checkpoint_only_env(folder: Path) -> dict[str, str]:
    """Environment of a subprocess with nothing but the checkpoint: no network, no packaged backbone weights."""
    return {"PYTHONPATH": os.pathsep.join((str(guard_folder(folder)), pythonpath()))}


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """A ``per_category_metrics.csv`` as ``{category: row}``."""
    with path.open() as handle:
        return {row["category"]: row for row in csv.DictReader(handle)}
