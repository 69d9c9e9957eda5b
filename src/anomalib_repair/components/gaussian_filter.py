"""Gaussian filtering of small maps as two matrix products (the same numbers as a 2-D convolution, much faster).

A separable filter with reflected borders is a linear map along each axis: ``Y = A_h · X · A_wᵀ`` where ``A_n`` is
the ``n × n`` banded matrix whose row ``i`` holds the 1-D kernel centred on ``i``, with the taps that fall outside
the map folded back onto the pixels that ``torch.nn.functional.pad(mode="reflect")`` would copy there. For the
anomaly maps (``σ = 4``, a 33 × 33 window, 128-256 px) and MFRNet's SSIM moments (hundreds of channels on a 16 × 16
grid) this replaces a grouped convolution that visits ``k²`` taps per pixel by two BLAS matrix products; the
results agree with anomalib's :class:`~anomalib.models.components.GaussianBlur2d` and with torchmetrics' SSIM to
float rounding (tested). Matrix products keep the batch dynamic in exported ONNX/OpenVINO graphs.

- :func:`reflect_filter_matrix` builds ``A_n``;
- :class:`MatrixGaussianFilter` filters ``(..., H, W)`` tensors with a 1-D kernel (matrices cached per size);
- :class:`MatrixGaussianBlur2d` is anomalib's ``GaussianBlur2d`` (same arguments, same ``kernel`` buffer, so
  checkpoints load unchanged) computed this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn

from anomalib_repair.components.tracing import is_exporting


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside ``[0, length)`` back inside by reflection about the edge pixels (no edge repeat)."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.remainder(index, period)  # reflection is periodic: repeated folds for kernels wider than the map
    return np.where(index >= length, period - index, index)


def reflect_filter_matrix(kernel: Sequence[float], length: int) -> torch.Tensor:
    """``(length, length)`` float64 ``A``: ``A @ x`` is the correlation of ``x`` with ``kernel``, reflected borders.

    Built with NumPy from plain numbers, so that inside an export trace it is a constant of the graph, not a
    scatter (whose duplicate indices ONNX would not add up).

    Args:
        kernel: 1-D kernel of odd size ``k``.
        length: Size of the filtered axis.
    """
    taps = np.asarray(kernel, dtype=np.float64).reshape(-1)
    radius = taps.size // 2
    rows = np.repeat(np.arange(length), taps.size)
    columns = reflect_index(rows + np.tile(np.arange(-radius, taps.size - radius), length), length)
    matrix = np.zeros((length, length), dtype=np.float64)
    np.add.at(matrix, (rows, columns), np.tile(taps, length))
    return torch.from_numpy(matrix)


def _taps(kernel: torch.Tensor | Sequence[float]) -> list[float]:
    """A 1-D kernel as a list of floats."""
    if isinstance(kernel, torch.Tensor):
        if kernel.is_meta:
            msg = "MatrixGaussianFilter needs the kernel's values; build it on the CPU, not on the 'meta' device."
            raise ValueError(msg)
        return [float(value) for value in kernel.detach().cpu().flatten().tolist()]
    return [float(value) for value in kernel]


class MatrixGaussianFilter(nn.Module):
    """Filter the last two axes of a tensor with 1-D kernels and reflected borders, as ``A_h · X · A_wᵀ``.

    The taps are kept as plain numbers (not buffers): the matrices are built from them on first use, so a model
    constructed on the ``meta`` device (to count parameters) or moved later still filters with the right kernel.

    Args:
        kernel_y: 1-D kernel along ``H`` (odd size): numbers, or a tensor that holds data (not ``meta``).
        kernel_x: 1-D kernel along ``W``; default ``kernel_y``.
    """

    def __init__(
        self, kernel_y: torch.Tensor | Sequence[float], kernel_x: torch.Tensor | Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.kernel_y = _taps(kernel_y)
        self.kernel_x = self.kernel_y if kernel_x is None else _taps(kernel_x)
        self._matrices: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def matrices(self, height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A_h`` and ``A_wᵀ`` for an ``H × W`` map, in ``like``'s dtype and device (built once per size).

        Built in float64, then cast (the folded border taps are summed exactly), and never as inference tensors: a
        map filtered under ``inference_mode`` (validation) must not break a later training step.
        """
        key = (height, width, like.dtype, like.device)
        if key in self._matrices:
            return self._matrices[key]
        with torch.inference_mode(False):
            rows = reflect_filter_matrix(self.kernel_y, height).to(like.device, like.dtype)
            columns = reflect_filter_matrix(self.kernel_x, width).T.contiguous().to(like.device, like.dtype)
        if not is_exporting():  # a trace's tensors must not outlive it
            self._matrices[key] = (rows, columns)
        return rows, columns

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Filtered ``(..., H, W)`` maps (same shape)."""
        rows, columns = self.matrices(maps.shape[-2], maps.shape[-1], maps)
        return torch.matmul(torch.matmul(rows, maps), columns)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> MatrixGaussianFilter:
        self._matrices = {}  # a move to another device or dtype rebuilds them
        return super()._apply(fn, *args, **kwargs)


class MatrixGaussianBlur2d(GaussianBlur2d):
    """anomalib's :class:`GaussianBlur2d` (``padding="same"``, reflected borders) as two matrix products.

    The 2-D kernel buffer is kept (checkpoints of either class load into the other); its row and column sums are
    the 1-D kernels. Other border types or ``padding="valid"`` fall back to anomalib's convolution.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with torch.device("cpu"):  # the taps' values, also when the model is being built on the meta device
            plane = GaussianBlur2d(*args, **kwargs).kernel[0, 0]
        self.filter = MatrixGaussianFilter(plane.sum(dim=1), plane.sum(dim=0))

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """Blurred ``(B, C, H, W)`` input."""
        if self.padding != "same" or self.border_type != "reflect":
            return super().forward(input_tensor)
        return self.filter(input_tensor)
