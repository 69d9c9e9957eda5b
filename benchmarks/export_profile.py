"""Where an exported model's time goes in OpenVINO: its operators against the backbone exported alone.

``export_latency.py`` times each exported model against its own backbone exported alone. This script opens the same
two graphs (``export_latency.export_pair``: reduced CPU recipe, two categories, untrained heads, per-category
post-processing) with OpenVINO's per-node performance counters on and reports, at each batch size:

- ``by_type.csv``: milliseconds per image of every node type (``Convolution``, ``FullyConnected``, ``Interpolate``,
  ...) in the model and in the backbone, and their difference: what the head adds, by kind of work;
- ``top_nodes.csv``: the model's slowest nodes with their input shapes, which name the operation in our code (the
  backbone's own convolutions are among them).

The counters' sum differs from the wall time (the profiler adds some cost, and some nodes run fused), so compare
shares within one run, not against ``export_latency.py``'s medians.

    PYTHONPATH=src python benchmarks/export_profile.py                       # whitened CRAS, 128 and 256 px
    PYTHONPATH=src python benchmarks/export_profile.py --methods cras crr mfrnet --sizes 128

Writes ``benchmarks/results/export_profile/{by_type.csv,top_nodes.csv,results.json}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_latency import export_pair
from inference_profile import quiet, write_csv
from suite.settings import REPO_ROOT

OUTPUT = REPO_ROOT / "benchmarks" / "results" / "export_profile"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["cras_whitened"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=20, help="profiled calls per batch size (after 3 warm-up calls)")
    parser.add_argument("--top", type=int, default=12, help="slowest model nodes listed per configuration")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def compile_profiled(path: Path) -> Any:
    """The graph at ``path`` compiled for OpenVINO's CPU plugin in f32, with per-node counters on."""
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})


def node_times(compiled: Any, images: np.ndarray, runs: int) -> dict[tuple[str, str], float]:
    """Milliseconds per image of every executed node of a compiled graph (by type and name)."""
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: images})
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for _ in range(runs):
        request.infer({0: images})
        for node in request.profiling_info:
            totals[(node.node_type, node.node_name)] += node.real_time.total_seconds() * 1000
    per_image = runs * images.shape[0]
    return {key: value / per_image for key, value in totals.items()}


def input_shapes(runtime_model: Any) -> dict[str, str]:
    """Each executed node's input shapes, by name (from the compiled graph OpenVINO actually runs)."""
    shapes = {}
    for op in runtime_model.get_ops():
        inputs = [str(op.input(index).get_partial_shape()) for index in range(op.get_input_size())]
        shapes[op.get_friendly_name()] = " x ".join(inputs)
    return shapes


def by_type(model: dict[tuple[str, str], float], backbone: dict[tuple[str, str], float]) -> dict[str, list[float]]:
    """Per node type: ``[model ms, backbone ms]`` per image."""
    table: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for column, times in enumerate((model, backbone)):
        for (node_type, _), value in times.items():
            table[node_type][column] += value
    return table


def profile(
    method: str, size: int, batch: int, compiled: dict[str, Any], args: argparse.Namespace
) -> tuple[list, list]:
    """The by-type and top-node rows of one configuration (``compiled``: the model and backbone graphs)."""
    images = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    model = node_times(compiled["model"], images, args.runs)
    backbone = node_times(compiled["backbone"], images, args.runs)
    key = {"method": method, "image_size": size, "batch": batch}
    model_total, backbone_total = sum(model.values()), sum(backbone.values())
    type_rows = [
        {**key, "node_type": node_type, "model_ms": round(mine, 4), "backbone_ms": round(floor, 4),
         "head_ms": round(mine - floor, 4), "model_share": round(mine / model_total, 4)}
        for node_type, (mine, floor) in sorted(by_type(model, backbone).items(), key=lambda item: -item[1][0])
    ]  # fmt: skip
    type_rows.append({**key, "node_type": "total", "model_ms": round(model_total, 4),
                      "backbone_ms": round(backbone_total, 4), "head_ms": round(model_total - backbone_total, 4),
                      "model_share": 1.0})  # fmt: skip
    shapes = input_shapes(compiled["model"].get_runtime_model())
    slowest = sorted(model.items(), key=lambda item: -item[1])[: args.top]
    node_rows = [
        {**key, "node_type": node_type, "node": name, "ms": round(value, 4),
         "model_share": round(value / model_total, 4), "input_shapes": shapes.get(name, "")}
        for (node_type, name), value in slowest
    ]  # fmt: skip
    return type_rows, node_rows


def main(argv: list[str] | None = None) -> int:
    """Export, profile and write the tables."""
    import openvino

    args = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "openvino": openvino.__version__,
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "command": "PYTHONPATH=src python benchmarks/export_profile.py " + " ".join(argv or sys.argv[1:]),
    }
    type_rows: list[dict[str, Any]] = []
    node_rows: list[dict[str, Any]] = []
    with quiet(), tempfile.TemporaryDirectory(prefix="export_profile_") as folder:
        for method in args.methods:
            for size in args.sizes:
                _, files = export_pair(
                    method, size, Path(folder) / f"{method}_{size}", per_category=2, model_onnx=False
                )
                compiled = {"model": compile_profiled(files["model_openvino"]),
                            "backbone": compile_profiled(files["backbone_onnx"])}  # fmt: skip
                for batch in args.batches:  # one compilation each (dynamic batch), profiled at every batch size
                    types, nodes = profile(method, size, batch, compiled, args)
                    type_rows += types
                    node_rows += nodes
                    total = types[-1]
                    print(f"{method} {size}px b{batch}: model {total['model_ms']:.2f} ms/img by the counters, "
                          f"backbone {total['backbone_ms']:.2f}; slowest: {nodes[0]['node_type']} "
                          f"{nodes[0]['input_shapes']}")  # fmt: skip
    meta["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    write_csv(args.output / "by_type.csv", type_rows)
    write_csv(args.output / "top_nodes.csv", node_rows)
    (args.output / "results.json").write_text(json.dumps({"meta": meta}, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
