"""What ``predict`` leaves behind, said where a person can find it: a per-image score table and the pictures' folder.

:class:`PredictionTable` is added to every model of this package (``configure_callbacks``). During
``anomalib predict`` / ``Engine().predict`` it collects, per image, the path, the image score and the decision;
when prediction ends it writes them to ``<run folder>/predictions.csv`` (one table per DDP rank:
``predictions.rank<N>.csv``) and prints that file and the folder of the visualiser's pictures.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

COLUMNS = ("image_path", "pred_score", "pred_label")


def _as_list(value: Any, size: int) -> list[Any]:
    if value is None:
        return [None] * size
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(value.shape[0], -1)[:, 0] if value.dim() > 0 else value.reshape(1)
        return flat.cpu().tolist()
    if isinstance(value, str | Path):
        return [str(value)]
    return list(value)


class PredictionTable(Callback):
    """Write ``predictions.csv`` (image path, image score, decision) at the end of ``predict`` and print where.

    Args:
        filename: Name of the table inside the trainer's ``default_root_dir``.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        self.filename = filename
        self.rows: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start an empty table."""
        del trainer, pl_module
        self.rows = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Add one row per image of the batch (the model's outputs, after anomalib's post-processing)."""
        del trainer, pl_module, batch_idx, dataloader_idx
        result = outputs if outputs is not None else batch
        scores = getattr(result, "pred_score", None)
        if scores is None:
            return
        size = int(scores.numel()) if isinstance(scores, torch.Tensor) else len(scores)
        paths = _as_list(getattr(result, "image_path", None), size)
        labels = _as_list(getattr(result, "pred_label", None), size)
        for path, score, label in zip(paths, _as_list(scores, size), labels, strict=False):
            self.rows.append(
                {
                    "image_path": path,
                    "pred_score": round(float(score), 6),
                    "pred_label": "" if label is None else int(bool(label)),
                }
            )

    def table_path(self, trainer: Trainer) -> Path:
        """Where the table goes: the run folder, one file per rank when several processes predict."""
        name = self.filename
        if trainer.world_size > 1:
            stem, _, suffix = name.rpartition(".")
            name = f"{stem}.rank{trainer.global_rank}.{suffix}"
        return Path(trainer.default_root_dir) / name

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the table and print it with the visualiser's folder."""
        if not self.rows:
            return
        path = self.table_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        anomalous = sum(1 for row in self.rows if row["pred_label"] == 1)
        lines = [f"\nPredicted {len(self.rows)} image(s), {anomalous} anomalous: scores in {path}"]
        visualizer = getattr(pl_module, "visualizer", None)
        pictures = getattr(visualizer, "output_dir", None) or Path(trainer.default_root_dir) / "images"
        if visualizer is not None and Path(pictures).is_dir():
            lines.append(f"  pictures in {pictures}")
        print("\n".join(lines))  # noqa: T201
