"""Do exported unified models decide as ``anomalib test`` does? Per category, on the real shared data.

For each of our models (reduced CPU recipe, a short budget), one unified model is trained on every category of
``../shared/data/real``; thresholds come from validation on the **tune** half of each category's test images, and
everything below is measured on the **report** half:

- ``lightning``: the decisions of ``Engine.predict`` with the per-category post-processor, which knows each image's
  category from its path (what ``anomalib test`` reports);
- ``torch`` / ``openvino`` / ``onnx``: the decisions of the exported torch model (anomalib's ``TorchInferencer``,
  which loads a pickled model only with ``TRUST_REMOTE_CODE=1``: set here, for this process) and of the OpenVINO
  IR and the ONNX file (``OpenVINOInferencer``, float32). They see only pixels: the model infers the category itself
  and applies that category's thresholds inside the graph. Given the image file as it is, the exported model
  resizes it as training did (``RepairPreProcessor``: antialiased, dynamic height and width);
  ``<export>_resized`` gives it the image already resized as the datamodule does, which separates the two effects;
- ``category_accuracy``: how often the model's own category inference is right (CRAS: class centers; CRR, MFRNet:
  nearest per-category prototype of pooled frozen features).

Per category and source: image F1 and accuracy of the decisions against the ground truth, and the share of images
whose exported decision equals the Lightning one. Written to ``benchmarks/results/export_decisions/``.

    PYTHONPATH=src python benchmarks/export_decisions.py                  # cras 10 epochs, crr 500 steps, mfrnet 10
    PYTHONPATH=src python benchmarks/export_decisions.py --methods cras --budget cras=3
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import budget_curve
import compare

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "results" / "export_decisions"
BUDGETS = {"cras": 10, "crr": 500, "mfrnet": 10}  # epochs (CRR: optimiser steps)
EXPORTS = ("torch", "openvino", "onnx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--budget", nargs="*", default=[], metavar="METHOD=N", help="override a method's budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


def train(method: str, budget: int, args: argparse.Namespace, work: Path) -> tuple[Any, Any, Any]:
    """A unified model of ``method`` fitted with validation on the tune half; its engine and datamodule."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_repair import MVTecFolder

    seed_everything(args.seed, workers=True)
    curve_args = argparse.Namespace(method=method, set=[], budgets=[budget], image_size=args.image_size, root=None,
                                    categories=None, train_batch_size=16)  # fmt: skip
    settings = budget_curve.settings_for(curve_args, args.seed)
    model = budget_curve.build_model(curve_args, settings, budget if method in budget_curve.STEP_BUDGET else None)
    datamodule = MVTecFolder(
        root=settings.root,
        train_batch_size=16,
        eval_batch_size=32,
        num_workers=0,
        val_split_mode="from_test",
        test_half="report",
        cache_images=True,
    )
    limits = {"max_steps": budget, "max_epochs": -1} if method in budget_curve.STEP_BUDGET else {"max_epochs": budget}
    engine = Engine(default_root_dir=work, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    **limits)  # fmt: skip
    engine.fit(model=model, datamodule=datamodule)
    return model, engine, datamodule


def lightning_decisions(model: Any, engine: Any, datamodule: Any) -> dict[str, dict[str, Any]]:
    """Per report-half image: category, ground truth, ``predict``'s decision and the model's inferred category."""
    import torch

    batches = engine.predict(model=model, dataloaders=datamodule.test_dataloader(), return_predictions=True)
    index = datamodule.category_index
    names = list(model.category_names)
    rows: dict[str, dict[str, Any]] = {}
    model.eval()
    for batch in batches:
        with torch.no_grad():
            _, inferred = model.model.predict(model.pre_processor.transform(batch.image))
        for path, truth, label, guess in zip(batch.image_path, batch.gt_label, batch.pred_label, inferred, strict=True):
            category = index.names_of([str(path)])[0]
            rows[str(path)] = {
                "category": category,
                "truth": bool(truth),
                "lightning": bool(label),
                "category_right": 0 <= int(guess) < len(names) and names[int(guess)] == category,
            }
    return rows


def model_resize(model: Any) -> Any:
    """The first ``Resize`` of the model's pre-processing (antialiased, as the datamodule applies it)."""
    from torchvision.transforms.v2 import Resize

    return next(step for step in model.pre_processor.transform.transforms if isinstance(step, Resize))


def exported_decisions(model: Any, engine: Any, paths: list[str], work: Path) -> dict[str, dict[str, bool]]:
    """Per export type and input kind, per image: the exported model's decision (float32 on CPU).

    ``<export>``: the image file as it is (the exported model resizes it); ``<export>_resized``: the image resized
    first as the datamodule does.
    """
    import numpy as np
    import torch
    from anomalib.data.utils import read_image
    from anomalib.deploy import ExportType, OpenVINOInferencer, TorchInferencer

    resize = model_resize(model)
    decisions: dict[str, dict[str, bool]] = {}
    # OpenVINO's compiled-model cache goes to ./openvino_cache; TRUST_REMOTE_CODE is anomalib's switch for pickled
    # models, set for our own export just written (both restored on the way out)
    with contextlib.chdir(work), mock.patch.dict(os.environ, {"TRUST_REMOTE_CODE": "1"}):
        for export in EXPORTS:
            exported = engine.export(model=model, export_type=ExportType(export), export_root=work / export)
            inferencer: Any
            if export == "torch":
                inferencer = TorchInferencer(path=exported, device="cpu")
            else:
                inferencer = OpenVINOInferencer(path=exported, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
            decisions[export], decisions[f"{export}_resized"] = {}, {}
            for path in paths:
                label = inferencer.predict(path).pred_label
                decisions[export][path] = bool(np.asarray(torch.as_tensor(label).detach()).ravel()[0])
                resized = resize(read_image(path, as_tensor=True))
                label = inferencer.predict(resized).pred_label
                decisions[f"{export}_resized"][path] = bool(np.asarray(torch.as_tensor(label).detach()).ravel()[0])
    return decisions


def scores(truth: list[bool], decided: list[bool]) -> tuple[float, float]:
    """Image F1 and accuracy of binary decisions."""
    tp = sum(t and d for t, d in zip(truth, decided, strict=True))
    fp = sum((not t) and d for t, d in zip(truth, decided, strict=True))
    fn = sum(t and not d for t, d in zip(truth, decided, strict=True))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    accuracy = sum(t == d for t, d in zip(truth, decided, strict=True)) / len(truth)
    return round(f1, 4), round(accuracy, 4)


def table(method: str, budget: int, rows: dict[str, dict[str, Any]], exported: dict[str, dict[str, bool]]) -> list:
    """Rows of the CSV: one per category and decision source."""
    out = []
    for category in sorted({row["category"] for row in rows.values()}):
        paths = sorted(path for path, row in rows.items() if row["category"] == category)
        truth = [rows[p]["truth"] for p in paths]
        lightning = [rows[p]["lightning"] for p in paths]
        accuracy_of_category = sum(rows[p]["category_right"] for p in paths) / len(paths)
        for source, decided in (("lightning", lightning), *((e, [exported[e][p] for p in paths]) for e in exported)):
            f1, accuracy = scores(truth, decided)
            agreement = sum(a == b for a, b in zip(decided, lightning, strict=True)) / len(paths)
            out.append({"method": method, "budget": budget, "category": category, "source": source,
                        "images": len(paths), "image_F1": f1, "accuracy": accuracy,
                        "agreement_with_lightning": round(agreement, 4),
                        "category_accuracy": round(accuracy_of_category, 4)})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Train, predict, export and compare every method; write the CSV and its command record."""
    args = parse_args(argv)
    budgets = dict(BUDGETS)
    for pair in args.budget:
        method, _, value = pair.partition("=")
        budgets[method] = int(value)
    args.output.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for method in args.methods:
        with tempfile.TemporaryDirectory(prefix=f"export_decisions_{method}_") as folder:
            work = Path(folder)
            model, engine, datamodule = train(method, budgets[method], args, work)
            rows = lightning_decisions(model, engine, datamodule)
            exported = exported_decisions(model, engine, sorted(rows), work)
            all_rows += table(method, budgets[method], rows, exported)
        for row in all_rows:
            if row["method"] == method:
                print(json.dumps(row), flush=True)
    with (args.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(all_rows[0]))
        writer.writeheader()
        writer.writerows(all_rows)
    record = {
        "command": "PYTHONPATH=src python benchmarks/export_decisions.py " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "git_commit": compare.git_commit(),
        "budgets": {method: budgets[method] for method in args.methods},
        "seed": args.seed,
        "image_size": args.image_size,
        "note": "reduced CPU recipes (EfficientNet-Lite0), thresholds from the tune half, decisions on the report half",
    }
    (args.output / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
