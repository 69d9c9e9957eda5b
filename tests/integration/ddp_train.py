"""Train and test a tiny model with 1 or N CPU processes (Lightning DDP, gloo) and write what every rank saw.

Run as a script (Lightning's DDP launcher starts the other ranks by running this same command again):

    python tests/integration/ddp_train.py --root DATA --out OUT --devices 2 [--model CRAS] [--epochs 2]

Also used for the real-kill test: ``--steps-every N`` writes step checkpoints to ``OUT/steps``, ``--ckpt-path``
resumes from one.

Writes ``OUT/rank<r>.json`` (per rank: the test image paths it scored, fingerprints of its random stream) and, on
rank 0, ``OUT/result.json`` (metrics, the per-category evaluator's image counts), ``OUT/state.pt`` (the
model's state dict, e.g. CRAS's centers) and ``OUT/model.ckpt``. ``--test-ckpt CK`` only tests ``CK``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tiny model registry

from anomalib_repair import MVTecFolder
from anomalib_repair.callbacks import StepCheckpoint
from tiny_models import TINY_MODELS


def odd_dataset(demo_root: Path, root: Path) -> Path:
    """``disc`` + ``weave`` of the generated demo data with odd sizes (15 training, 19 test images).

    A padding distributed sampler would repeat images of such a set, which the DDP checks must catch.
    """
    for name in ("disc", "weave"):
        shutil.copytree(demo_root / name, root / name)
    sorted((root / "disc" / "train" / "good").glob("*.png"))[0].unlink()  # 7 + 8 = 15 training images
    sorted((root / "weave" / "test" / "good").glob("*.png"))[0].unlink()  # 10 + 9 = 19 test images
    return root


def _fingerprint(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.numpy().tobytes()).hexdigest()[:16]


class Probe(Callback):
    """Records per rank: random-stream fingerprints at the first training batch and the test paths scored."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rng: list[str] = []
        self.first_draws: list[float] = []
        self.test_paths: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            state = torch.get_rng_state()
            self.rng.append(_fingerprint(state))
            self.first_draws = torch.randn(4).tolist()  # what the model's noise would draw first
            torch.set_rng_state(state)  # leave the stream untouched

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_paths.extend(batch.image_path)

    def on_test_end(self, trainer, pl_module) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "rng": self.rng,
            "first_draws": self.first_draws,
            "test_paths": self.test_paths,
            "trained": _fingerprint(
                torch.cat([p.detach().flatten().cpu() for p in pl_module.parameters() if p.requires_grad])
            ),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--model", default="CRAS")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="per-process training batch size")
    parser.add_argument("--categories", default="disc,weave")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--steps-every", type=int, default=0, help="StepCheckpoint interval into OUT/steps")
    parser.add_argument("--ckpt-path", default=None, help="resume from this checkpoint")
    parser.add_argument("--test-ckpt", default=None, help="no training: test this checkpoint (on a default model)")
    parser.add_argument("--anomalib-datamodule", action="store_true", help="anomalib's MVTecAD, first category")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(args.seed)
    overrides = {"visualizer": False}
    if args.image_size:
        overrides.update(image_size=args.image_size, crop_size=args.image_size)
    model = TINY_MODELS[args.model](**overrides)
    loader_args = {"train_batch_size": args.batch, "eval_batch_size": 8, "num_workers": 0}
    if args.anomalib_datamodule:
        datamodule = MVTecAD(root=args.root, category=args.categories.split(",")[0], **loader_args)
    else:
        datamodule = MVTecFolder(root=args.root, categories=args.categories.split(","), **loader_args)
    probe = Probe(out)
    engine = Engine(
        max_epochs=args.epochs,
        default_root_dir=out / "run",
        accelerator="cpu",
        devices=args.devices,
        strategy=("ddp_find_unused_parameters_true" if args.model == "CRR" else "ddp") if args.devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        callbacks=[probe]
        + ([StepCheckpoint(every_n_train_steps=args.steps_every, dirpath=out / "steps")] if args.steps_every else []),
    )
    if args.test_ckpt:
        model = TINY_MODELS[args.model]()  # the checkpoint's arguments rebuild it
        metrics = engine.test(model=model, datamodule=datamodule, ckpt_path=args.test_ckpt, verbose=False)
    else:
        engine.fit(model=model, datamodule=datamodule, ckpt_path=args.ckpt_path)
        metrics = engine.test(model=model, datamodule=datamodule, verbose=False)
        engine.trainer.save_checkpoint(out / "model.ckpt")  # every rank takes part; rank 0 writes
    if engine.trainer.global_rank == 0:
        evaluator = model.evaluator
        result = {
            "metrics": {key: float(value) for key, value in metrics[0].items()},
            "counts": getattr(evaluator, "last_counts", {}),
            "test_size": len(datamodule.test_data),
            "train_size": len(datamodule.train_data),
        }
        (out / "result.json").write_text(json.dumps(result))
        torch.save({key: value.cpu() for key, value in model.state_dict().items()}, out / "state.pt")


if __name__ == "__main__":
    main()
