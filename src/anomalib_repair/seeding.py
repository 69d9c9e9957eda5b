"""Make ``anomalib train --seed_everything N`` seed the run.

anomalib's command line (2.x) accepts ``--seed_everything`` (also from a ``--config`` file) and documents it as
"run seed_everything with this value before classes instantiation", but never calls it: two runs of the same
command would start from different random states and end with different metrics. Inside anomalib's CLI process
only, :mod:`anomalib_repair.cli_support` wraps the CLI's ``before_instantiate_classes`` hook once so that it calls
:func:`apply_cli_seed` with the parsed configuration, just before the model and datamodule are built. Outside the
CLI (Python API, notebooks) nothing is seeded: there the user calls ``seed_everything`` as usual.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch import seed_everything

logger = logging.getLogger(__name__)


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


def apply_cli_seed(cli: Any) -> int | None:
    """Seed everything from ``cli``'s integer ``--seed_everything``; returns the seed it applied (else ``None``)."""
    seed = cli_seed(cli)
    if seed is None:
        return None
    logger.info("anomalib_repair: applying --seed_everything %d (anomalib's CLI parses it but does not seed).", seed)
    seed_everything(seed, workers=True, verbose=False)
    return seed
