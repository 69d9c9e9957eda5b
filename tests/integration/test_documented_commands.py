"""Every `anomalib …` command written in the README, the model READMEs and the docs parses as written.

Each command is taken from the Markdown (continuation lines joined, comments dropped), run through bash from the
repository root with this checkout's package first on the path and ``--print_config`` appended: anomalib's CLI
resolves every class and argument (model, datamodule, recipe file, trainer options) and prints the configuration
without building anything, so placeholders such as ``PATH`` or ``./datasets/MVTecAD`` need not exist. A command
whose class, option or recipe is renamed fails here. The README's and the model READMEs' commands run in the
default suite, the docs pages' behind the ``slow`` marker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANOMALIB = Path(sys.executable).parent / "anomalib"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "src/anomalib_repair/models").glob("*/README.md"))]
DOCUMENTS += sorted((ROOT / "docs").glob("*.md"))
SUBCOMMANDS = ("train", "fit", "test", "validate", "predict", "export")


def documented_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every distinct ``anomalib <subcommand> …`` line of the documents."""
    found: dict[str, str] = {}
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        index = 0
        while index < len(lines):
            line = lines[index].strip()
            index += 1
            if not re.match(rf"anomalib\s+({'|'.join(SUBCOMMANDS)})\s", line):
                continue
            while line.endswith("\\") and index < len(lines):
                line = line[:-1] + " " + lines[index].strip()
                index += 1
            command = re.sub(r"\s+#.*$", "", line).strip()
            found.setdefault(command, f"{document.relative_to(ROOT)}")
    return sorted((where, command) for command, where in found.items())


COMMANDS = documented_commands()


def test_the_documents_hold_the_commands_users_copy():
    subcommands = {command.split()[1] for _, command in COMMANDS}
    assert {"train", "test", "predict", "export"} <= subcommands
    assert len(COMMANDS) >= 20


def _case(where: str, command: str) -> object:
    # the READMEs' commands in the default suite (about 8 s each on 2 cores); the docs pages' behind `slow`
    marks = [pytest.mark.slow] if where.startswith("docs/") else []
    return pytest.param(where, command, marks=marks, id=f"{where}:{command[:60]}")


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize(("where", "command"), [_case(where, command) for where, command in COMMANDS])
def test_documented_command_parses(where, command):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{ANOMALIB.parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(part for part in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if part)
    done = subprocess.run(
        ["bash", "-c", f"{command} --print_config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{where}: {command}\n{done.stderr[-2000:]}"
    assert "class_path: anomalib_repair." in done.stdout or "anomalib.data." in done.stdout, done.stdout[-1000:]
