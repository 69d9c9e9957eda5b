"""Whether the current forward is being traced for export (ONNX, OpenVINO, ``torch.export``, TorchScript).

Models use it to pick a shape-generic code path while exporting: Python loops over the batch or chunking by the
batch size freeze the example's batch size into the exported graph.
"""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """True inside ``torch.export``/``torch.onnx.export`` (dynamo), ``torch.compile`` or ``torch.jit.trace``."""
    compiler = torch.compiler
    return bool(compiler.is_exporting() or compiler.is_compiling() or torch.jit.is_tracing())
