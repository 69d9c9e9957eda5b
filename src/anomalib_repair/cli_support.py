"""What the package changes in anomalib's CLI process, and only there: one place, applied once per process.

Importing :mod:`anomalib_repair` (which anomalib's CLI does while it parses ``--model anomalib_repair.CRAS``) calls
:func:`prepare_cli_process`. When the running program is anomalib's command line (its ``main`` is the program's
entry point), it

- makes errors of this package (:class:`~anomalib_repair.errors.AnomalibRepairError`: a missing dataset, bad
  images, weights offline, …) print as one line instead of a traceback (``ANOMALIB_REPAIR_TRACEBACK=1`` shows the
  traceback again); any other error keeps its traceback;
- makes ``--seed_everything N`` seed the run, which anomalib's CLI parses but never applies
  (:mod:`anomalib_repair.seeding`), by wrapping the CLI's ``before_instantiate_classes`` hook.

In any other program (a script, a notebook, a test runner) nothing is changed: ``sys.excepthook`` stays the
program's own and nothing is seeded.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from anomalib_repair.errors import install_excepthook
from anomalib_repair.seeding import apply_cli_seed

_PREPARED = False


def in_anomalib_cli() -> bool:
    """Whether this process is anomalib's command line (``anomalib train|test|…``)."""
    cli_module = sys.modules.get("anomalib.cli.cli")
    entry = getattr(sys.modules.get("__main__"), "main", None)
    return cli_module is not None and entry is not None and entry is getattr(cli_module, "main", None)


def prepare_cli_process() -> bool:
    """Apply the CLI-only behaviour once if this process is anomalib's CLI; returns whether it did."""
    global _PREPARED  # noqa: PLW0603 - once per process by design
    if _PREPARED or not in_anomalib_cli():
        return False
    _PREPARED = True
    install_excepthook()
    cli_class = sys.modules["anomalib.cli.cli"].AnomalibCLI
    original = cli_class.before_instantiate_classes

    @functools.wraps(original)
    def before_instantiate_classes(self: Any) -> None:
        original(self)
        apply_cli_seed(self)

    cli_class.before_instantiate_classes = before_instantiate_classes
    return True
