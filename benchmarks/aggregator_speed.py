"""CRAS's patch aggregation with each layer's kernel cut to its output block, against the full kernels, in turn.

:class:`~anomalib_repair.components.patch_features.PatchAggregator` runs, per tapped layer, one 3×3 convolution
whose kernel is the product of the two poolings. The cross-layer pooling averages neighbouring entries of the
layers' concatenation, so each layer reaches only a contiguous block of the output channels (with two layers, one
half); the rest of its full kernel is zeros. The aggregator now convolves with the reached block only and places
the blocks side by side. The earlier path, convolving with the full kernels and summing, is rebuilt here
(:func:`full_kernel_aggregate`) and both are timed round after round in the same process, alone and inside the
whole eval forward of the ``cras`` and ``cras_whitened`` networks (built as :mod:`inference_profile` builds them:
untrained heads, timing only), beside the backbone alone. Each path counts its calls; a run in which the model did
not call both is refused.

    PYTHONPATH=src python benchmarks/aggregator_speed.py

Writes ``benchmarks/results/aggregator_speed/results.csv`` (and ``results.json`` with the command).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inference_profile
from cras_whitening_speed import time_in_turn
from suite.settings import REPO_ROOT

from anomalib_repair.components.patch_features import PatchAggregator, pooling_kernels

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "aggregator_speed"
METHODS = ("cras", "cras_whitened")


def full_kernel_aggregate(aggregator: PatchAggregator, features: list[torch.Tensor]) -> torch.Tensor:
    """The earlier path: every layer convolved with its full ``(pool_dim, C, 3, 3)`` kernel, the layers summed."""
    cache = aggregator.__dict__.setdefault("_full_kernels", {})
    if features[0].dtype not in cache:
        assert aggregator.in_channels is not None
        kernels = pooling_kernels(aggregator.in_channels, aggregator.pool_dim, aggregator.patch_size)
        cache[features[0].dtype] = [kernel.to(features[0].dtype) for kernel in kernels]
    height, width = aggregator.grid_size(features)
    total = None
    for feature, kernel in zip(features, cache[features[0].dtype], strict=True):
        pooled = F.conv2d(feature, kernel, padding=aggregator.patch_size // 2)
        if pooled.shape[-2:] != (height, width):
            pooled = F.interpolate(pooled, size=(height, width), mode="bilinear", align_corners=False)
        total = pooled if total is None else total + pooled
    assert total is not None
    return total.flatten(2).transpose(1, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=9, help="rounds at batch 1 (a third of them at larger batches)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def time_batch(network: torch.nn.Module, backbone: torch.nn.Module, images: torch.Tensor, rounds: int) -> dict:
    """Median ms/image of the aggregation alone and of the forward, with each path, and of the backbone alone."""
    aggregator: PatchAggregator = network.aggregator  # type: ignore[assignment]
    counts = {"full": 0, "blocks": 0}  # calls made by the model's own forward
    blocks_forward = aggregator.forward

    def use(name: str, whole: bool) -> None:
        def counted(features: list[torch.Tensor]) -> torch.Tensor:
            counts[name] += int(whole)
            return full_kernel_aggregate(aggregator, features) if name == "full" else blocks_forward(features)

        aggregator.forward = counted  # type: ignore[method-assign]

    with torch.inference_mode():
        features = backbone(images)
        expected = full_kernel_aggregate(aggregator, features)
        torch.testing.assert_close(blocks_forward(features), expected, atol=1e-4, rtol=1e-5)  # same numbers

        def step(name: str, whole: bool) -> Callable[[], Any]:
            def call() -> Any:
                use(name, whole)
                return network(images) if whole else aggregator(features)

            return call

        calls = {f"{part}_{name}": step(name, part == "forward") for part in ("aggregate", "forward")
                 for name in ("full", "blocks")}  # fmt: skip
        calls["backbone"] = lambda: backbone(images)
        try:
            medians = time_in_turn(calls, rounds, images.shape[0])
        finally:
            aggregator.forward = blocks_forward  # type: ignore[method-assign]
    if not all(counts.values()):
        msg = f"the model did not call both aggregation paths ({counts}): the benchmark no longer patches its path"
        raise RuntimeError(msg)
    return medians


def measure(method: str, size: int, batches: list[int], runs: int) -> list[dict[str, Any]]:
    """Rows for one network and input size."""
    network, backbone = inference_profile.build_network(method, size)
    rows = []
    for batch in batches:
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        medians = time_batch(network, backbone, images, runs if batch == 1 else max(3, runs // 3))
        row: dict[str, Any] = {"method": method, "image_size": size, "batch": batch}
        row.update({f"{name}_ms_per_image": round(value, 3) for name, value in medians.items()})
        row["aggregate_speed_ratio"] = round(medians["aggregate_full"] / medians["aggregate_blocks"], 3)
        row["forward_speed_ratio"] = round(medians["forward_full"] / medians["forward_blocks"], 3)
        row["x_backbone_full"] = round(medians["forward_full"] / medians["backbone"], 3)
        row["x_backbone_blocks"] = round(medians["forward_blocks"] / medians["backbone"], 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run and write the CSV."""
    args = parse_args(argv)
    with inference_profile.quiet():
        rows = [row for method in args.methods for size in args.sizes
                for row in measure(method, size, args.batches, args.runs)]  # fmt: skip
    inference_profile.write_timing_run(args.output, rows, "aggregator_speed.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
