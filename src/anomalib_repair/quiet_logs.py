"""Third-party log noise that this package causes, silenced only while it is caused.

- Exporting to ONNX/OpenVINO makes onnxscript and onnx_ir log every optimisation pass at INFO (hundreds of lines
  under anomalib's CLI, which logs at INFO).
- A deliberately headless timm backbone (``features_only`` or ``num_classes=0``) makes timm warn about the
  classifier's "Unexpected keys" of the pretrained file.

:func:`quieter` raises the level of the named loggers inside a ``with`` block and restores them after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

EXPORT_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "torch._export")
TIMM_BUILDER = ("timm.models._builder",)


@contextmanager
def quieter(names: tuple[str, ...], level: int = logging.WARNING) -> Iterator[None]:
    """Let the loggers ``names`` pass only records of ``level`` and above while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, old in zip(loggers, saved, strict=True):
            logger.setLevel(old)
