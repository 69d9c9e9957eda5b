"""Every `anomalib …` command written in the README, the model READMEs and the docs parses as written.

Each command is taken from the Markdown (continuation lines joined, comments dropped), its words expanded by bash
(quotes, ``$(python -m anomalib_repair.recipes …)``) from the repository root, and parsed by anomalib's own CLI
class with ``--print_config`` appended (``parse_commands.py``, all commands in one interpreter): every class and
argument (model, datamodule, recipe file, trainer options) is resolved and the configuration printed, without
building anything, so placeholders such as ``PATH`` or ``./datasets/MVTecAD`` need not exist. A command whose
class, option or recipe is renamed fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import parse_cli_commands

ROOT = Path(__file__).resolve().parents[2]
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


def _environment() -> dict[str, str]:
    binaries = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # python -m … inside $( )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": binaries}
    env["PYTHONPATH"] = os.pathsep.join(part for part in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if part)
    return env


def _words(command: str, env: dict[str, str]) -> list[str]:
    """The arguments after ``anomalib``, as the shell would pass them."""
    rest = command.split(None, 1)[1]
    done = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {rest}"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return [word for word in done.stdout.split("\0") if word]


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict[str, dict]:
    env = _environment()
    folder = tmp_path_factory.mktemp("commands")
    results = parse_cli_commands([[*_words(c, env), "--print_config"] for _, c in COMMANDS], folder, ROOT, env)
    return {command: result for (_, command), result in zip(COMMANDS, results, strict=True)}


def test_the_documents_hold_the_commands_users_copy():
    subcommands = {command.split()[1] for _, command in COMMANDS}
    assert {"train", "test", "predict", "export"} <= subcommands
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses(parsed, where, command):
    result = parsed[command]
    assert result["code"] == 0, f"{where}: {command}\n{result['code']}\n{result['stderr']}"
    printed = result["stdout"]
    assert "class_path: anomalib_repair." in printed or "anomalib.data." in printed, printed[-1000:]
