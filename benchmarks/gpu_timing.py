"""GPU throughput at the papers' exact settings, with random weights: training batches/s and inference img/s.

Issue 15 (item 6) and issue 19 (item 6): time each paper's own recipe, not the reduced CPU one, on a CUDA device at
``32-true`` and ``16-mixed``:

- ours from ``configs/<model>/mvtec_multiclass.yaml``: CRAS (WideResNet-50 ``layer2`` + ``layer3``, 288 px crop),
  CRR (DINOv2 ViT-B/14 with registers, 392 px crop; stage I steps), MFRNet (VGG16, 256 px);
- anomalib's GLASS (WideResNet-50 at 288 px, frozen backbone) and Dinomaly (its defaults: ViT-B/14, 392 px crop).

Weights are random (timm builds every backbone with ``pretrained=False``; frozen backbones stay frozen): throughput
does not depend on the values, and the device machine reaches no model hub. Training runs through anomalib's
``Engine`` (Lightning) on a synthetic folder of random images in MVTec AD layout: ``--warmup`` untimed training
batches, then ``--steps`` timed ones (CUDA synchronised around each; batches, not Lightning's optimizer-step count,
which two optimizers advance twice a batch). Inference times the torch model's eval forward and its own frozen
backbone alone at batch 1 and 32, in turn, round after round, under the same autocast; ``x_backbone`` is
their ratio (issue 19's target is 1.5).

Writes ``results.csv`` and ``results.json`` (command, device, versions) to ``benchmarks/results/gpu/``.

    PYTHONPATH=src python benchmarks/gpu_timing.py                      # every method, 32-true and 16-mixed
    PYTHONPATH=src python benchmarks/gpu_timing.py --methods cras glass --precisions 16-mixed
    PYTHONPATH=src python benchmarks/gpu_timing.py --smoke --output /tmp/gpu_smoke   # CPU, tiny: the code path only

``--smoke`` runs on the CPU with the reduced CPU recipes (``configs/<model>/cpu_reduced.yaml``) at 64 px and a few
steps (``16-mixed`` becomes ``bf16-mixed``, the CPU's autocast): it checks the code path (the test suite runs it),
its numbers mean nothing. GLASS computes its centre over the whole training set at the start of every epoch,
outside the timed batches: ``fit_s`` (the whole fit's wall time) shows that cost.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
import yaml
from inference_profile import write_csv
from PIL import Image
from suite.timing import device_of, ms_per_image, synchronize

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "benchmarks" / "results" / "gpu"
OURS = {"cras": "CRAS", "crr": "CRR", "mfrnet": "MFRNet"}
METHODS = (*OURS, "glass", "dinomaly")
PRECISIONS = ("32-true", "16-mixed")
# The frozen extractor inside each torch model: the floor its forward is divided by.
BACKBONES = {
    "cras": "backbone",
    "crr": "encoder.backbone",
    "mfrnet": "aggregator.backbone",
    "glass": "forward_modules.feature_aggregator",
    "dinomaly": "encoder",
}
SMOKE_SIZE = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--precisions", nargs="+", choices=(*PRECISIONS, "bf16-mixed"), default=list(PRECISIONS))
    parser.add_argument("--warmup", type=int, default=5, help="untimed training batches first")
    parser.add_argument("--steps", type=int, default=20, help="timed training batches")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="inference batch sizes")
    parser.add_argument("--runs", type=int, default=20, help="timed inference rounds per batch size")
    parser.add_argument("--smoke", action="store_true", help="CPU, 64 px, the offline backbone: the code path only")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    return parser.parse_args(argv)


@contextlib.contextmanager
def random_backbone_weights() -> Iterator[None]:
    """Every ``timm.create_model`` inside builds its architecture with random weights (no download, no file)."""
    import timm

    original = timm.create_model

    def create(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        kwargs.pop("pretrained_cfg_overlay", None)  # a local weight file named for the pretrained load
        return original(*args, **kwargs)

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


def recipe(method: str, smoke: bool) -> tuple[dict[str, Any], int]:
    """Our model's ``init_args`` and training batch size: its MVTec AD multi-class config (``--smoke``: its reduced
    CPU recipe at 64 px, batch 2, textures left out)."""
    name = "cpu_reduced" if smoke else "mvtec_multiclass"
    config = yaml.safe_load((REPO_ROOT / "configs" / method / f"{name}.yaml").read_text())
    init = dict(config["model"]["init_args"])
    if not smoke:
        return init, int(config["data"]["init_args"]["train_batch_size"])
    for key in ("image_size", "crop_size"):
        if key in init:
            init[key] = SMOKE_SIZE
    init.pop("synthesis", None)  # the shared texture folder may be absent: the self-augmented source only
    return init, 2


def build(method: str, warmup: int, steps: int, smoke: bool) -> tuple[Any, int, int]:
    """The Lightning model at the paper's settings (random weights), its training batch size and input size."""
    import anomalib_repair

    if method in OURS:
        init, batch = recipe(method, smoke)
        init["pre_trained"] = False
        if method == "crr":  # every timed step in stage I (the recipes' stage I is longer than any run here)
            init["stage1"] = {**init.get("stage1", {}), "steps": warmup + steps + 1}
            init["stage2"] = {**init.get("stage2", {}), "steps": 1}
        model = getattr(anomalib_repair, OURS[method])(**init, visualizer=False)
        size = int(init.get("crop_size") or init.get("image_size") or 256)
        return model, batch, size
    if method == "glass":
        from anomalib.models import Glass

        size = SMOKE_SIZE if smoke else 288
        kwargs: dict[str, Any] = {"input_shape": (size, size), "pre_trained": True, "visualizer": False}
        if smoke:  # anomalib's timm extractor takes timm's own name (no ``.pypi`` weight tag)
            kwargs.update(backbone="tf_efficientnet_lite0", layers=["blocks.2", "blocks.4"], step=2,
                          pretrain_embed_dim=64, target_embed_dim=64)  # fmt: skip
        else:
            kwargs.update(backbone="wide_resnet50_2", layers=["layer2", "layer3"])
        return Glass(**kwargs), 2 if smoke else 8, size
    from anomalib.models import Dinomaly

    if smoke:
        msg = "--smoke does not build Dinomaly (a ViT-B at 392 px is no smoke test): leave it out of --methods"
        raise SystemExit(msg)
    return Dinomaly(visualizer=False), 16, 392  # batch 16 as in the Dinomaly paper


def synthetic_folder(root: Path, size: int, train_images: int) -> Path:
    """A one-category MVTec AD-layout folder of random images (and one defect with its mask) at ``size`` px."""
    generator = np.random.default_rng(0)

    def save(path: Path, mode: str = "RGB") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "L":
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[size // 4 : size // 2, size // 4 : size // 2] = 255
            Image.fromarray(mask, mode="L").save(path)
            return
        Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)

    category = root / "synthetic"
    for index in range(train_images):
        save(category / "train" / "good" / f"{index:03d}.png")
    for index in range(2):
        save(category / "test" / "good" / f"{index:03d}.png")
    save(category / "test" / "defect" / "000.png")
    save(category / "ground_truth" / "defect" / "000_mask.png", mode="L")
    return root


def training_timer(warmup: int, steps: int, timing: Any) -> Any:
    """A Lightning callback that times each training batch after the first ``warmup`` and stops after ``steps`` more.

    Batches, not Lightning's ``global_step``: a model with two optimizers (CRAS, GLASS) advances that twice a batch.
    """
    from lightning.pytorch import Callback

    class TrainingTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0
            self._seen = 0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            del trainer, batch, batch_idx
            del pl_module
            synchronize(timing)
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            del outputs, batch, batch_idx
            del pl_module
            synchronize(timing)
            self._seen += 1
            if self._seen > warmup:
                self.seconds.append(time.perf_counter() - self._start)
            if self._seen >= warmup + steps:
                trainer.should_stop = True

    return TrainingTimer()


def timing_settings(args: argparse.Namespace, precision: str) -> Any:
    """What the suite's timing helpers read (:mod:`suite.timing`): the accelerator and the precision."""
    return SimpleNamespace(accelerator="cpu" if args.smoke else "gpu", precision=precision)


def train(model: Any, batch: int, size: int, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fit ``warmup + steps`` training batches on a synthetic folder; the rate of the timed ones."""
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine

    import anomalib_repair

    with tempfile.TemporaryDirectory() as folder:
        root = synthetic_folder(Path(folder) / "data", size, train_images=2 * batch)
        datamodule = anomalib_repair.MVTecFolder(
            root=root, categories=None, train_batch_size=batch, eval_batch_size=batch, num_workers=0
        )
        timer = training_timer(args.warmup, args.steps, timing_settings(args, precision))
        engine = Engine(
            default_root_dir=Path(folder) / "run",
            accelerator="cpu" if args.smoke else "gpu",
            devices=1,
            precision=precision,
            # the timer stops the fit after warmup + steps batches; a finite bound still (Dinomaly's scheduler needs
            # one), with room for models whose optimizers advance Lightning's step count twice a batch
            max_steps=10 * (args.warmup + args.steps),
            logger=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[ModelCheckpoint(dirpath=Path(folder) / "ckpt", save_top_k=0, save_last=False), timer],
        )
        start = time.perf_counter()
        engine.fit(model=model, datamodule=datamodule)
        fit_s = time.perf_counter() - start
    seconds = sum(timer.seconds)
    rate = len(timer.seconds) / seconds if seconds else float("nan")
    return {
        "train_batch": batch,
        "timed_batches": len(timer.seconds),
        "train_batches_per_s": round(rate, 3),
        "train_images_per_s": round(rate * batch, 2),
        "fit_s": round(fit_s, 1),  # the whole fit: set-up and per-epoch work outside the batches too (centres)
    }


def infer(method: str, model: Any, size: int, precision: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Eval forward and backbone alone, at each batch size, in turn; median ms per image and their ratio."""
    timing = timing_settings(args, precision)
    device = device_of(timing)
    network = model.model.to(device).eval()  # Lightning returns the model to the CPU when fit ends
    backbone = network.get_submodule(BACKBONES[method])
    rows = []
    for batch in args.batches:
        images = torch.randn(batch, 3, size, size, device=device)
        # in turn, round after round, synchronised, under the precision's autocast, after 3 warm-up calls each
        timed = ms_per_image({"model": network, "backbone": backbone}, images, args.runs, timing)
        ms, floor_ms = timed["model"][0], timed["backbone"][0]
        rows.append(
            {
                "infer_batch": batch,
                "ms_per_image": round(ms, 3),
                "images_per_s": round(1000 / ms, 1),
                "backbone_ms_per_image": round(floor_ms, 3),
                "x_backbone": round(ms / floor_ms, 3),
            }
        )
    return rows


def measure(method: str, precision: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One method at one precision: training rate, then inference rows (one per batch size); peak GPU memory of each."""
    cuda = not args.smoke
    gc.collect()
    if cuda:  # the previous method's model is gone: its memory counts in no later peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    with random_backbone_weights():
        model, batch, size = build(method, args.warmup, args.steps, args.smoke)
        training = train(model, batch, size, precision, args)
    train_peak = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    inference = infer(method, model, size, precision, args)
    infer_peak = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
    del model
    base = {"method": method, "precision": precision, "input_size": size, **training, "peak_gpu_mb_train": train_peak}
    return [{**base, **row, "peak_gpu_mb_infer": infer_peak} for row in inference]


def write(output: Path, rows: list[dict[str, Any]], argv: list[str]) -> None:
    """``results.csv`` and ``results.json`` (the command, the device, the versions, the rows)."""
    from importlib.metadata import version

    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "results.csv", rows)  # a failed method's row adds an error column
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    meta = {
        "command": " ".join(["PYTHONPATH=src python benchmarks/gpu_timing.py", *argv]),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "anomalib": version("anomalib"),
        "lightning": version("lightning"),
        "timm": version("timm"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),  # TF32 or not changes 32-true on CUDA
        "weights": "random (timm pretrained=False): throughput only",
    }
    (output / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Measure every method at every precision; the results are rewritten after each, so a failure loses nothing."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_timing.py: no CUDA device is visible; on a CPU only --smoke runs (it checks the code path).")
        return 1
    rows: list[dict[str, Any]] = []
    failed = 0
    for method in args.methods:
        for asked in args.precisions:
            precision = "bf16-mixed" if args.smoke and asked == "16-mixed" else asked  # CPU autocast is bfloat16
            try:
                measured = measure(method, precision, args)
            except Exception as error:  # noqa: BLE001 - one method's failure must not lose the others' rows
                failed += 1
                print(f"{method} {precision}: FAILED: {type(error).__name__}: {error}", flush=True)
                measured = [{"method": method, "precision": precision, "error": f"{type(error).__name__}: {error}"}]
            for row in measured:
                rows.append(row)
                if "error" not in row:
                    print(
                        f"{method:9s} {precision:10s} train {row['train_batches_per_s']:.2f} batches/s "
                        f"(batch {row['train_batch']})  infer b{row['infer_batch']} {row['ms_per_image']:.2f} "
                        f"ms/img ({row['x_backbone']:.2f}x backbone)",
                        flush=True,
                    )
            write(args.output, rows, argv)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
