"""Errors with one-line messages that say what is wrong and how to fix it.

Every error this package raises for bad input derives from :class:`AnomalibRepairError`. When such an error
reaches the top of a command-line run, :func:`install_excepthook` prints just its one-line message instead of a
traceback (set ``ANOMALIB_REPAIR_TRACEBACK=1`` to see the traceback too).
"""

from __future__ import annotations

import os
import sys
from types import TracebackType


class AnomalibRepairError(Exception):
    """Base class of the errors raised for bad input or a missing resource."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        _RECENT.append(self)  # for the CLI hook: an argument parser may re-raise it as text only
        del _RECENT[:-8]


_RECENT: list[AnomalibRepairError] = []


class DatasetNotFoundError(AnomalibRepairError, FileNotFoundError):
    """A dataset root, category folder or its images are missing."""


class UnknownCategoryError(AnomalibRepairError, ValueError):
    """A category name that the dataset does not have."""


class BadInputError(AnomalibRepairError, ValueError):
    """An input file or option that cannot be used as it is."""


def one_line(error: BaseException) -> str:
    """The one-line message of an error.

    A data loader worker re-raises its error with the worker's traceback in the message; the original message is
    then the traceback's last line (``package.Class: message``), returned without the class prefix.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(error).__name__
    last = lines[-1]
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last.removeprefix(prefix).removeprefix(f"{type(error).__qualname__}: ")


def _one_line_hook(previous: object) -> object:
    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, AnomalibRepairError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:  # jsonargparse folds an error raised while building a class into its own message
            cause = next((recent for recent in reversed(_RECENT) if str(recent) and str(recent) in str(error)), None)
        if cause is not None and os.environ.get("ANOMALIB_REPAIR_TRACEBACK", "0") in {"0", ""}:
            sys.stderr.write(f"error: {one_line(cause)}\n")
            return
        previous(kind, error, traceback)  # type: ignore[operator]

    hook.anomalib_repair = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Print :class:`AnomalibRepairError` as one line at the top level; leave every other error as it is."""
    if not getattr(sys.excepthook, "anomalib_repair", False):
        sys.excepthook = _one_line_hook(sys.excepthook)  # type: ignore[assignment]
