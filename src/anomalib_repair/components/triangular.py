"""Per-position products with lower-triangular matrices that read only the lower triangle.

CRAS's whitened residual multiplies every patch's offset by its own position's whitener ``L⁻¹`` (the inverse of a
Cholesky factor, lower-triangular): ``P`` matrices of ``D × D`` per category, 151 MB at 128 px. At small batches the
product is bound by memory, not arithmetic: each forward reads every matrix of the categories present once, and half
of what a dense product reads is the zero upper triangle.

:func:`lower_triangular_product` splits the rows into ``num_blocks`` bands; band ``i`` (rows ``r0:r1``) only needs
columns ``:r1``, so it multiplies the offsets' first ``r1`` entries by a strided view of that band, and the zero
block right of the diagonal is never read. With 8 bands a product reads ``(1 + 1/8) / 2 ≈ 56 %`` of the matrix.
The sums are the same products in another order: the result equals the dense product to float rounding (tested).
"""

from __future__ import annotations

import math

import torch


def lower_triangular_product(matrices: torch.Tensor, vectors: torch.Tensor, num_blocks: int = 8) -> torch.Tensor:
    """``out[b, p] = matrices[p] @ vectors[b, p]`` for lower-triangular ``matrices``, reading only their lower part.

    Args:
        matrices: ``(P, D, D)`` lower-triangular matrices, one per position. Entries above the diagonal must be
            zero: those inside a band's diagonal block are read, those right of it are not.
        vectors: ``(B, P, D)`` one vector per image and position.
        num_blocks: Row bands (1, or anything below it, is the dense product).

    Returns:
        ``(B, P, D)`` products (a transposed view; not contiguous).

    Raises:
        ValueError: The shapes are not ``(P, D, D)`` and ``(B, P, D)``.
    """
    square = matrices.ndim == 3 and matrices.shape[1] == matrices.shape[2]
    if not square or vectors.ndim != 3 or tuple(vectors.shape[1:]) != tuple(matrices.shape[:2]):
        shapes = f"{tuple(matrices.shape)} and {tuple(vectors.shape)}"
        msg = f"expected (P, D, D) matrices and (B, P, D) vectors, got {shapes}"
        raise ValueError(msg)
    dim = matrices.shape[-1]
    band = max(1, math.ceil(dim / max(1, num_blocks)))
    # (P, B, D), contiguous: one matrix product per position, and each band's slice stays BLAS-friendly (a strided
    # last dimension, e.g. features transposed out of a convolution, would make bmm copy batch by batch)
    by_position = vectors.transpose(0, 1).contiguous()
    parts = []
    for start in range(0, dim, band):
        stop = min(start + band, dim)
        rows = matrices[:, start:stop, :stop]  # a view: the columns right of ``stop`` are zero and not read
        parts.append(torch.matmul(by_position[:, :, :stop], rows.transpose(1, 2)))
    return torch.cat(parts, dim=2).transpose(0, 1)
