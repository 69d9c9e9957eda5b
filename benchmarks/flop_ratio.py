"""The arithmetic each model adds to its backbone at the papers' own settings: issue 19's 1.5x as a FLOP ratio.

The latency ratios of :mod:`inference_profile` and :mod:`export_latency` are measured with the reduced CPU recipes
(EfficientNet-Lite0, 128 and 256 px), whose backbone is light. A runtime that runs at the pace of the arithmetic
(OpenVINO on a CPU; any GPU for large batches) cannot bring a model below the ratio of its floating-point operations
to its backbone's, whatever the engineering. This script counts both (``torch.utils.flop_counter``: matmuls and
convolutions; one image, eval forward with the category inferred) at the settings each paper uses:

- ours from ``configs/<model>/mvtec_multiclass.yaml``: CRAS (WideResNet-50 ``layer2`` + ``layer3``, 288 px crop,
  1536-d), CRR (DINOv2 ViT-B/14 with registers, 392 px crop), MFRNet (VGG16, 256 px), each with ``--categories``
  (15, MVTec AD's) centre sets or prototypes of the fitted shapes;
- anomalib's GLASS (WideResNet-50, 288 px) and Dinomaly (its defaults: ViT-B/14, 392 px crop), as
  :mod:`gpu_timing` builds them.

Weights are random (no download, no file): the count does not depend on them. ``x_backbone_flops`` above
:data:`inference_profile.TARGET` is flagged: no exact speed-up reaches the target there in a compute-bound runtime.

Writes ``results.csv`` and ``results.json`` (the command) to ``benchmarks/results/flop_ratio/``.

    PYTHONPATH=src python benchmarks/flop_ratio.py
    PYTHONPATH=src python benchmarks/flop_ratio.py --methods cras glass --categories 1

``--smoke`` counts the reduced CPU recipes at 64 px instead (the test suite's check of the code path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_timing import BACKBONES, METHODS, OURS, build, random_backbone_weights
from inference_profile import TARGET, fit_categories, gflops, quiet, write_timing_run
from suite.settings import REPO_ROOT

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "flop_ratio"
MVTEC_CATEGORIES = 15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the FLOP count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--categories", type=int, default=MVTEC_CATEGORIES, help="centre sets / prototypes (ours)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--smoke", action="store_true", help="reduced CPU recipes at 64 px: the code path only")
    return parser.parse_args(argv)


def count(method: str, categories: int, smoke: bool = False) -> dict[str, Any]:
    """GFLOPs per image of ``method``'s eval forward and of its own backbone alone, at the paper's settings."""
    torch.manual_seed(0)
    with random_backbone_weights(), quiet():
        model, _, size = build(method, warmup=0, steps=1, smoke=smoke)
    network = model.model.eval()
    if method in OURS:
        fit_categories(method, network, size, num_categories=categories)
    backbone = network.get_submodule(BACKBONES[method])
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    call = network.predict if method in OURS else network
    total, floor = gflops(call, images), gflops(backbone, images)
    return {
        "method": method,
        "settings": settings_name(method, smoke),
        "input_size": size,
        "categories": categories if method in OURS else None,
        "gflops": round(total, 3),
        "backbone_gflops": round(floor, 3),
        "x_backbone_flops": round(total / floor, 3),
        "above_target": total / floor > TARGET,
    }


def settings_name(method: str, smoke: bool) -> str:
    """Where a method's settings come from."""
    if smoke:
        return f"smoke: configs/{method}/cpu_reduced.yaml at 64 px" if method in OURS else "smoke: Lite0 at 64 px"
    return f"configs/{method}/mvtec_multiclass.yaml" if method in OURS else "anomalib defaults"


def main(argv: list[str] | None = None) -> int:
    """Count every method, print one line each, write the CSV and the command."""
    args = parse_args(argv)
    rows = []
    for method in args.methods:
        row = count(method, args.categories, args.smoke)
        rows.append(row)
        flag = "  ABOVE 1.5x" if row["above_target"] else ""
        print(
            f"{method:9s} {row['input_size']} px  {row['gflops']:8.2f} GFLOPs, backbone {row['backbone_gflops']:8.2f}:"
            f" {row['x_backbone_flops']:.2f}x{flag}",
            flush=True,
        )
    write_timing_run(args.output, rows, "flop_ratio.py", argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
