"""Parse many `anomalib …` command lines in one interpreter, as anomalib's CLI would, and report each outcome.

Usage: ``python parse_commands.py COMMANDS.json RESULT.json``: COMMANDS.json holds a list of argument lists (the
words after ``anomalib``, ``--print_config`` appended by the caller). For each, anomalib's ``AnomalibCLI`` parses
the arguments; ``--print_config`` makes it print the resolved configuration and exit before anything is built.
RESULT.json gets, per command, the exit code, what it printed on stdout (whole: a ``--model.help`` text is long) and
the tail of its stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


def parse(args: list[str]) -> dict[str, object]:
    from anomalib.cli.cli import AnomalibCLI

    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            AnomalibCLI(args=args, run=False)
        except SystemExit as stop:
            code = stop.code if stop.code is not None else 0
        except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
            code = f"{type(error).__name__}: {error}"
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()[-2000:]}


def main() -> int:
    commands = json.loads(Path(sys.argv[1]).read_text())
    results = [parse(args) for args in commands]
    Path(sys.argv[2]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
