"""CRAS with whitened residuals: the banded lower-triangular product against the dense one, in the same process.

The whitened residual multiplies every patch by its own position's whitener (lower-triangular, 384 × 384 at the
reduced recipe). :func:`anomalib_repair.components.triangular.lower_triangular_product` reads only the bands on and
left of the diagonal; the dense path is ``torch.einsum`` over the whole matrix. This script builds the eval-mode
``cras_whitened`` network as :mod:`inference_profile` does (untrained head, two categories' statistics: timing only)
and times, round after round in turn, the whole forward with each product and the backbone alone (medians). The
recorded profiles of unchanged code moved by more than this change between runs minutes apart, so the two paths
are compared in turn, in one process, where both see the same machine. Each product counts its calls, and a run in
which the model did not call both is refused (a patched name the model no longer uses would time one path twice).

    PYTHONPATH=src python benchmarks/cras_whitening_speed.py

Writes ``benchmarks/results/cras_whitening_speed/results.csv`` (and ``results.json`` with the command).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inference_profile
from suite.settings import REPO_ROOT

import anomalib_repair.models.cras.torch_model as cras_torch
from anomalib_repair.components.triangular import lower_triangular_product

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "cras_whitening_speed"


def dense_product(matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The product over whole matrices (the path before the banded one)."""
    return torch.einsum("pde,bpe->bpd", matrices, vectors)


PRODUCTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dense": dense_product,
    "banded": lower_triangular_product,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=9, help="rounds at batch 1 (a third of them at larger batches)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def time_in_turn(calls: dict[str, Callable[[], Any]], rounds: int, batch: int) -> dict[str, float]:
    """Median ms per image of each call, timed round after round in turn (one warm-up call each first)."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1e3 / batch)
    return {name: statistics.median(values) for name, values in samples.items()}


def time_batch(
    network: torch.nn.Module, backbone: torch.nn.Module, images: torch.Tensor, rounds: int
) -> dict[str, float]:
    """Median ms/image of the forward with each product and of the backbone alone, timed in turn.

    Each product counts its calls; a run in which the model did not call both is refused.
    """
    counts = dict.fromkeys(PRODUCTS, 0)

    def forward_with(name: str) -> Callable[[], Any]:
        def counted(matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
            counts[name] += 1
            return PRODUCTS[name](matrices, vectors)

        def call() -> Any:
            cras_torch.lower_triangular_product = counted  # type: ignore[assignment]
            return network(images)

        return call

    calls = {name: forward_with(name) for name in PRODUCTS}
    calls["backbone"] = lambda: backbone(images)
    with torch.inference_mode():
        medians = time_in_turn(calls, rounds, images.shape[0])
    if not all(counts.values()):
        msg = f"the model did not call every product ({counts}): the benchmark no longer patches its path"
        raise RuntimeError(msg)
    return medians


def measure(size: int, batches: list[int], runs: int) -> list[dict[str, Any]]:
    """Rows for one input size: ms/image of the forward with each product and of the backbone alone."""
    network, backbone = inference_profile.build_network("cras_whitened", size)
    original = cras_torch.lower_triangular_product
    rows = []
    try:
        for batch in batches:
            images = torch.rand(batch, 3, size, size)
            medians = time_batch(network, backbone, images, runs if batch == 1 else max(3, runs // 3))
            row: dict[str, Any] = {"image_size": size, "batch": batch}
            row.update({f"ms_per_image_{name}": round(medians[name], 3) for name in PRODUCTS})
            row["backbone_ms_per_image"] = round(medians["backbone"], 3)
            row.update({f"x_backbone_{name}": round(medians[name] / medians["backbone"], 3) for name in PRODUCTS})
            row["speed_ratio"] = round(medians["dense"] / medians["banded"], 3)  # above 1: the banded path is faster
            rows.append(row)
            print(row, flush=True)
    finally:
        cras_torch.lower_triangular_product = original
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run and write the CSV."""
    args = parse_args(argv)
    with inference_profile.quiet():
        rows = [row for size in args.sizes for row in measure(size, args.batches, args.runs)]
    inference_profile.write_timing_run(args.output, rows, "cras_whitening_speed.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
