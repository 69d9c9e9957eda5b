"""An antialiased resize that exports: the same pixels in torch, ONNX and OpenVINO, for any input size.

Training and ``anomalib test`` resize with torchvision's ``Resize(antialias=True)``. anomalib's export transform
(``get_exportable_transform``) turns that into a plain bilinear resize, because ONNX's ``Resize`` antialias flag is
not honoured by every runtime (OpenVINO ignores it). An exported model fed a camera image of another size then sees
other pixels than the model that was validated, and its decisions drift (measured: 4-21 % of ``magnetic_tile``
decisions, ``benchmarks/results/export_decisions``).

:class:`ExportableAntialiasResize` computes torchvision's antialiased bilinear resize as two matrix products,
``A_h @ image @ A_w^T``: each row of ``A`` is the triangle filter of one output pixel, widened by the scale when
shrinking and cut to the same window as torchvision's kernel, then normalised. The matrices are built from the
input's size with tensor operations only, so a dynamo export keeps the height and width dynamic. It equals
``torchvision.transforms.v2.functional.resize(..., antialias=True)`` within float rounding (tests: 1e-5), upscaling
included. An aspect-keeping resize followed by a center crop (CRAS's paper pre-processing) is computed the same
way, with only the cropped rows and columns (:class:`ExportableAntialiasResizeCrop`). :func:`exportable_transform`
is anomalib's ``get_exportable_transform`` with these in place of the non-antialiased resize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from anomalib.pre_processing.utils.transform import get_exportable_transform
from torchvision.transforms.v2 import CenterCrop, Compose, InterpolationMode, Resize, Transform


def antialias_matrix(
    size: int | torch.SymInt,
    output: int | torch.Tensor,
    rows: int | None = None,
    offset: int | torch.Tensor = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weights of torchvision's antialiased bilinear resize along one axis: ``(rows, size)``.

    Args:
        size: The input length along the axis (may be symbolic during export).
        output: The resized length (an ``int``, or a tensor computed from the input's size).
        rows: How many output pixels to compute (default ``output``, which must then be an ``int``).
        offset: The first output pixel computed (a center crop of the resized axis starts there).
        dtype: Floating type of the weights.

    Returns:
        Row-normalised weights: output pixel ``offset + i`` is ``weights[i] @ input``.
    """
    source = torch.arange(size, dtype=dtype)  # input pixel indices; their count carries the (dynamic) size
    length = source[-1] + 1.0
    scale = length / output
    support = torch.clamp(scale, min=1.0)  # the triangle widens with the scale only when shrinking
    count = int(output) if rows is None else rows
    centers = (torch.arange(count, dtype=dtype) + offset + 0.5) * scale
    weights = torch.clamp(1.0 - ((source[None, :] + 0.5 - centers[:, None]) / support).abs(), min=0.0)
    first = torch.clamp(torch.floor(centers - support + 0.5), min=0.0)  # torchvision's window, end exclusive
    last = torch.minimum(torch.floor(centers + support + 0.5), length)
    window = (source[None, :] >= first[:, None]) & (source[None, :] < last[:, None])
    weights = weights * window.to(dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def _apply(images: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``rows @ images @ columns^T``, each weight matrix as the left operand of its product.

    Written as ``(columns @ (rows @ images)^T)^T``: same sums. With a static input size the matrices are
    constants, and OpenVINO (2026.4, CPU) turns ``images @ constant`` into a fully connected layer into which it
    then fuses the following per-channel ``Normalize``, and refuses to compile (``Check 'data.size() == OC'
    failed``). A constant left operand is left a matrix product.
    """
    dtype = images.dtype if images.is_floating_point() else torch.float32
    rows, columns = rows.to(images.device, dtype), columns.to(images.device, dtype)
    resized_rows = torch.matmul(rows, images.to(dtype))
    return torch.matmul(columns, resized_rows.transpose(-1, -2)).transpose(-1, -2)


def _static_size(images: torch.Tensor) -> tuple[int, int] | None:
    """``(H, W)`` when both are plain ints (eager, or an export at a fixed size); ``None`` when either is symbolic."""
    height, width = images.shape[-2], images.shape[-1]
    return (height, width) if type(height) is int and type(width) is int else None


def antialias_resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Resize ``(..., H, W)`` images to ``size = (h, w)`` as ``Resize(size, antialias=True)`` does, exportably.

    Images already of that size are returned as they are (as torchvision does; the matrices would be the identity),
    so a model exported at its own input size does no resize work.
    """
    if _static_size(images) == (int(size[0]), int(size[1])):
        return images if images.is_floating_point() else images.float()  # floats, as the matrix path gives
    rows = antialias_matrix(images.shape[-2], int(size[0]))
    columns = antialias_matrix(images.shape[-1], int(size[1]))
    return _apply(images, rows, columns)


def antialias_resize_crop(images: torch.Tensor, shorter_side: int, crop: Sequence[int]) -> torch.Tensor:
    """``Resize(shorter_side, antialias=True)`` then ``CenterCrop(crop)``, exportably, for any input size.

    The resized size depends on the input's orientation; it is computed as tensor values (never a shape), and only
    the cropped rows and columns of the resize are computed, so the graph's output is ``crop`` for every input.
    """
    static = _static_size(images)
    if static is not None and min(static) == int(shorter_side) and crop[0] <= static[0] and crop[1] <= static[1]:
        first_row, first_column = round((static[0] - crop[0]) / 2.0), round((static[1] - crop[1]) / 2.0)  # identity
        cropped = images[..., first_row : first_row + int(crop[0]), first_column : first_column + int(crop[1])]
        return cropped if cropped.is_floating_point() else cropped.float()
    height = torch.arange(images.shape[-2], dtype=torch.float32)[-1] + 1.0
    width = torch.arange(images.shape[-1], dtype=torch.float32)[-1] + 1.0
    portrait = width <= height  # torchvision: the shorter side gets `shorter_side`, the other is truncated
    new_height = torch.where(
        portrait, torch.floor(shorter_side * height / width), torch.full_like(height, shorter_side)
    )
    new_width = torch.where(portrait, torch.full_like(width, shorter_side), torch.floor(shorter_side * width / height))
    top = torch.round((new_height - crop[0]) / 2.0)  # torchvision's center crop rounds half to even, as torch does
    left = torch.round((new_width - crop[1]) / 2.0)
    rows = antialias_matrix(images.shape[-2], new_height, rows=int(crop[0]), offset=top)
    columns = antialias_matrix(images.shape[-1], new_width, rows=int(crop[1]), offset=left)
    return _apply(images, rows, columns)


class ExportableAntialiasResize(Transform):
    """``Resize(size, antialias=True)`` (``size = (h, w)``) as matrix products (see the module docstring).

    Args:
        size: Output ``(height, width)``.
    """

    def __init__(self, size: Sequence[int]) -> None:
        super().__init__()
        self.size = [int(size[0]), int(size[1])]

    def _transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        del params
        return antialias_resize(inpt, self.size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Called by torchvision >= 0.21 (older releases call ``_transform``)."""
        return self._transform(inpt, params)


class ExportableAntialiasResizeCrop(Transform):
    """``Resize(shorter_side, antialias=True)`` + ``CenterCrop(crop)`` as matrix products, for any input size.

    Args:
        shorter_side: The length the shorter side is resized to (the other keeps the aspect ratio).
        crop: Output ``(height, width)`` of the center crop.
    """

    def __init__(self, shorter_side: int, crop: Sequence[int]) -> None:
        super().__init__()
        self.shorter_side = int(shorter_side)
        self.crop = [int(crop[0]), int(crop[1])]

    def _transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        del params
        return antialias_resize_crop(inpt, self.shorter_side, self.crop)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Called by torchvision >= 0.21 (older releases call ``_transform``)."""
        return self._transform(inpt, params)


def _fixed_size(resize: Resize) -> list[int] | None:
    """``[h, w]`` of an antialiased bilinear resize to a fixed size; ``None`` for any other resize."""
    size = list(resize.size) if isinstance(resize.size, Sequence) else None
    fixed = size is not None and len(size) == 2 and resize.max_size is None
    mode = getattr(resize.interpolation, "value", resize.interpolation)  # an enum or its string, by release
    return size if fixed and resize.antialias and mode == InterpolationMode.BILINEAR.value else None


def _shorter_side(resize: Resize) -> int | None:
    """The ``int`` size of an antialiased bilinear aspect-keeping resize; ``None`` for any other resize."""
    size = resize.size
    single = size[0] if isinstance(size, Sequence) and len(size) == 1 else size
    mode = getattr(resize.interpolation, "value", resize.interpolation)
    plain = resize.antialias and mode == InterpolationMode.BILINEAR.value and resize.max_size is None
    return int(single) if isinstance(single, int) and plain else None


def exportable_transform(transform: Transform | None) -> Transform | None:
    """The exportable transform of anomalib, with the antialiased resizes kept antialiased.

    A fixed-size ``Resize((h, w), antialias=True)`` becomes :class:`ExportableAntialiasResize`; an aspect-keeping
    ``Resize(s, antialias=True)`` directly followed by a ``CenterCrop`` becomes one
    :class:`ExportableAntialiasResizeCrop`. Any other step is exported as anomalib exports it.
    """
    exported = get_exportable_transform(transform)
    if transform is None or exported is None:
        return exported
    originals = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    steps = list(exported.transforms) if isinstance(exported, Compose) else [exported]
    if len(originals) != len(steps):
        return exported
    replaced: list[Any] = []
    index = 0
    while index < len(steps):
        original = originals[index]
        following = originals[index + 1] if index + 1 < len(originals) else None
        if isinstance(original, Resize) and (size := _fixed_size(original)) is not None:
            replaced.append(ExportableAntialiasResize(size))
        elif (
            isinstance(original, Resize)
            and (side := _shorter_side(original)) is not None
            and isinstance(following, CenterCrop)
        ):
            replaced.append(ExportableAntialiasResizeCrop(side, list(following.size)))
            index += 1  # the crop is part of it
        else:
            replaced.append(steps[index])
        index += 1
    return Compose(replaced) if isinstance(exported, Compose) or len(replaced) > 1 else replaced[0]
