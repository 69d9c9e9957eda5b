"""Crossed masks: ``n`` complementary masks over a grid of ``k × k`` blocks.

The feature grid (``H × W`` cells) is cut into blocks of ``k × k`` cells; blocks at the right and bottom edges are
cut short when ``H`` or ``W`` is not a multiple of ``k``. Every block is assigned to one of ``n`` subsets and mask
``i`` hides the cells of the blocks in subset ``i``. The ``n`` masks therefore partition the grid: every cell is
hidden in exactly one of them.

- Training: a fresh random, balanced assignment per image (the subsets differ in size by at most one block).
- Test: one fixed assignment, the diagonal pattern ``(row + column) mod n`` on the block grid, so that each
  hidden block's four neighbours are visible in its pass. It is stored as a buffer (deterministic, exportable).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anomalib_repair.errors import BadInputError


def diagonal_assignment(block_grid: tuple[int, int], n: int) -> torch.Tensor:
    """Fixed subset of every block, ``(row + column) mod n``, shape ``(Hb, Wb)``."""
    rows = torch.arange(block_grid[0]).unsqueeze(1)
    columns = torch.arange(block_grid[1]).unsqueeze(0)
    return (rows + columns) % n


def random_assignment(
    batch_size: int,
    block_grid: tuple[int, int],
    n: int,
    device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random balanced subset of every block for each image, shape ``(B, Hb, Wb)``.

    Blocks are put in a random order and dealt to the subsets in turn, so the subset sizes differ by at most one.
    """
    num_blocks = block_grid[0] * block_grid[1]
    order = torch.rand(batch_size, num_blocks, device=device, generator=generator).argsort(dim=1)
    ranks = order.argsort(dim=1)  # rank of every block in the random order
    return (ranks % n).view(batch_size, *block_grid)


def blocks_to_cells(assignment: torch.Tensor, k: int, grid: tuple[int, int]) -> torch.Tensor:
    """Expand a ``(..., Hb, Wb)`` block assignment to the ``(..., H, W)`` cells (edge blocks cut short)."""
    cells = assignment.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    return cells[..., : grid[0], : grid[1]]


def masks_from_assignment(assignment: torch.Tensor, k: int, grid: tuple[int, int], n: int) -> torch.Tensor:
    """The ``n`` masks of an assignment: ``(n, ..., H, W)`` floats, 1 where the cell is hidden."""
    cells = blocks_to_cells(assignment, k, grid)
    subsets = torch.arange(n, device=cells.device).view(n, *([1] * cells.dim()))
    return (cells.unsqueeze(0) == subsets).float()


class CrossedMaskGenerator(nn.Module):
    """Complementary crossed masks over a fixed feature grid.

    Args:
        grid_size: ``(H, W)`` cells of the feature map.
        k: Block side in cells (at least 1).
        n: Number of masks (at least 2, at most the number of blocks).

    Example:
        >>> generator = CrossedMaskGenerator((5, 7), k=2, n=3)
        >>> generator.test_masks.shape
        torch.Size([3, 1, 5, 7])
        >>> bool((generator.test_masks.sum(0) == 1).all())
        True
    """

    def __init__(self, grid_size: tuple[int, int], k: int = 2, n: int = 3) -> None:
        super().__init__()
        if k < 1:
            msg = f"Crossed-mask block size k must be at least 1, got {k}."
            raise BadInputError(msg)
        block_grid = (math.ceil(grid_size[0] / k), math.ceil(grid_size[1] / k))
        num_blocks = block_grid[0] * block_grid[1]
        if not 2 <= n <= num_blocks:
            msg = (
                f"Number of crossed masks n must be between 2 and the number of {k}x{k} blocks of the "
                f"{grid_size[0]}x{grid_size[1]} feature grid ({num_blocks}), got {n}: lower n or k."
            )
            raise BadInputError(msg)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.block_grid = block_grid
        self.k = k
        self.n = n
        fixed = masks_from_assignment(diagonal_assignment(block_grid, n), k, self.grid_size, n)
        self.register_buffer("test_masks", fixed.unsqueeze(1), persistent=False)  # (n, 1, H, W)
        self.test_masks: torch.Tensor

    def random_masks(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random complete set per image: ``(n, B, 1, H, W)``, every cell hidden in exactly one mask."""
        assignment = random_assignment(
            batch_size, self.block_grid, self.n, device=self.test_masks.device, generator=generator
        )
        return masks_from_assignment(assignment, self.k, self.grid_size, self.n).unsqueeze(2)

    def fixed_masks(self, batch_size: int) -> torch.Tensor:
        """The fixed test set for a batch: ``(n, B, 1, H, W)`` (a view of the buffer, no randomness)."""
        return self.test_masks.unsqueeze(1).expand(-1, batch_size, -1, -1, -1)
