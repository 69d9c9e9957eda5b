"""What one worker subprocess does: train, test and time one method, or time the backbone alone.

The parent (:mod:`suite.runner`) starts ``benchmarks/compare.py --worker TASK --settings ... --result ...`` in a
fresh interpreter for every task, so that each method's peak memory is its own; :func:`run_worker` is that
subprocess's entry point and writes the task's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from .methods import BUILDERS, build_datamodule, method_details, pretrained_backbone, trainer_budget
from .settings import BACKBONE_TASK, LAYERS, Settings
from .timing import cpu_seconds, device_of, gpu_memory, latencies, peak_rss_mb, validation_timer


def run_backbone_worker(settings: Settings) -> dict[str, Any]:
    """The latency floor: the frozen backbone alone at the same resolution."""
    backbone = pretrained_backbone(list(LAYERS)).eval().to(device_of(settings))
    return {"method": BACKBONE_TASK, **latencies(backbone, settings), "peak_rss_mb": peak_rss_mb(), **gpu_memory()}


def run_method_worker(method: str, settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Train, test and time one method; return its metrics and speed."""
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(settings.seed, workers=True)
    rss_start = peak_rss_mb()
    datamodule = build_datamodule(settings)
    model = BUILDERS[method](settings)
    budget = trainer_budget(method, settings)
    timer = validation_timer()
    engine = Engine(
        default_root_dir=run_dir,
        accelerator=settings.accelerator,
        devices=1,
        precision=settings.precision,
        **budget,  # one validation pass (thresholds), after the last step
        logger=False,
        enable_progress_bar=False,
        callbacks=[timer, ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=False)],
    )
    start, cpu_start = time.perf_counter(), cpu_seconds()
    engine.fit(model=model, datamodule=datamodule)
    fit_s, fit_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start
    rss_train = peak_rss_mb()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    returned = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    test_s, test_cpu_s = time.perf_counter() - start, cpu_seconds() - cpu_start
    table = model.evaluator.last_results
    metrics = {name: dict(row) for name, row in table.rows.items()}
    network = model.model.eval().to(device_of(settings))  # Lightning moves the model back to the CPU at teardown
    return {
        "method": method,
        "epochs": round(engine.trainer.global_step * settings.train_batch_size / len(datamodule.train_data), 2)
        if "max_steps" in budget
        else budget["max_epochs"],
        "steps": engine.trainer.global_step,
        "train_images": len(datamodule.train_data),
        "test_images": len(datamodule.test_data),
        "fit_s": fit_s,
        "val_s": timer.seconds,
        "train_s": fit_s - timer.seconds,
        "test_s": test_s,
        "fit_cpu_s": fit_cpu_s,
        "test_cpu_s": test_cpu_s,
        **latencies(network, settings, floor=pretrained_backbone(list(LAYERS)).eval().to(device_of(settings))),
        "rss_start_mb": rss_start,
        "peak_rss_train_mb": rss_train,
        "peak_rss_mb": peak_rss_mb(),
        **gpu_memory(),
        "accelerator": settings.accelerator,
        "precision": settings.precision,
        "metrics": metrics,
        "returned": {key: float(value) for key, value in returned.items()},
        "results_dir": str(engine.trainer.default_root_dir),
        "details": method_details(method, model, settings),
    }


def run_worker(args: argparse.Namespace) -> int:
    """Entry point of a worker subprocess: run one method and write its JSON."""
    import torch

    settings = Settings(**json.loads(args.settings.read_text()))
    torch.manual_seed(settings.seed)
    if args.worker == BACKBONE_TASK:
        result = run_backbone_worker(settings)
    else:
        result = run_method_worker(args.worker, settings, args.result.parent.parent / "runs" / args.worker)
    result["threads"] = torch.get_num_threads()
    result["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    args.result.write_text(json.dumps(result, indent=2, default=str))
    return 0
