"""Make ``anomalib train --seed_everything N`` seed the run.

anomalib's command line (2.x) accepts ``--seed_everything`` and documents it as "run seed_everything with this
value before classes instantiation", but never calls it: two runs of the same command start from different
random states and end with different metrics. The package's models and datamodules call
:func:`apply_cli_seed` first thing in their constructors; when they are being built by anomalib's CLI and the
user gave an integer seed, it runs Lightning's ``seed_everything`` once for that CLI, before any weight is
initialised. Outside the CLI (Python API) it does nothing: there the user calls ``seed_everything`` as usual.
"""

from __future__ import annotations

import logging
import sys
import weakref
from types import FrameType
from typing import Any

from lightning.pytorch import seed_everything

logger = logging.getLogger(__name__)

_SEEDED: weakref.WeakSet[Any] = weakref.WeakSet()  # CLI objects whose seed was applied already


def _calling_cli() -> Any | None:
    """The ``AnomalibCLI`` whose method is on the call stack, if any (without importing anomalib's CLI)."""
    module = sys.modules.get("anomalib.cli.cli")
    cli_class = getattr(module, "AnomalibCLI", None)
    if cli_class is None:
        return None
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, cli_class):
            return candidate
        frame = frame.f_back
    return None


def cli_seed(cli: Any) -> int | None:
    """The integer ``--seed_everything`` of ``cli``'s subcommand; ``None`` for ``True``/``False``/absent."""
    config = getattr(cli, "config", None)
    if config is None:
        return None
    subcommand = config.get("subcommand")
    section = config.get(str(subcommand), config) if subcommand else config
    value = section.get("seed_everything", None) if hasattr(section, "get") else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def apply_cli_seed() -> int | None:
    """Seed everything from anomalib's ``--seed_everything`` once per CLI run; returns the seed it applied."""
    cli = _calling_cli()
    if cli is None or cli in _SEEDED:
        return None
    _SEEDED.add(cli)
    seed = cli_seed(cli)
    if seed is None:
        return None
    logger.info("anomalib_repair: applying --seed_everything %d (anomalib's CLI parses it but does not seed).", seed)
    seed_everything(seed, workers=True, verbose=False)
    return seed
