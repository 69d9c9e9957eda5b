"""The real `anomalib` command line with our model and datamodule, in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ANOMALIB = Path(sys.executable).parent / "anomalib"
TINY = [
    "--model.backbone", "tf_efficientnet_lite0.pypi",
    "--model.layers", "[blocks.2, blocks.4]",
    "--model.image_size", "64", "--model.crop_size", "64",
    "--model.embed_dim", "128", "--model.noise_std", "1.0",
]  # fmt: skip


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [str(ANOMALIB), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _table(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["category"]: row for row in csv.DictReader(handle)}


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_train_then_test_from_checkpoint_reproduces_the_metrics(tmp_path, demo_root):
    data = ["--data", "MVTecFolder", "--data.root", str(demo_root), "--data.categories", "[disc, weave]"]
    data += ["--data.num_workers", "0", "--data.train_batch_size", "8"]
    trained = _run(["train", "--model", "anomalib_repair.CRAS", *data, *TINY, "--trainer.max_epochs", "2"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "results" / "CRAS" / "MVTecFolder" / "disc+weave" / "v0"
    first = _table(run_dir / "per_category_metrics.csv")
    assert set(first) == {"disc", "weave", "mean"}
    assert list((run_dir / "images").iterdir()), "anomaly-map pictures are written per category"
    checkpoint = run_dir / "weights" / "lightning" / "model.ckpt"
    assert checkpoint.exists()

    (run_dir / "per_category_metrics.csv").unlink()
    tested = _run(["test", "--model", "anomalib_repair.CRAS", *data, *TINY, "--ckpt_path", str(checkpoint)], tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    second = _table(next(tmp_path.rglob("per_category_metrics.csv")))
    assert second == first


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_missing_dataset_root_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = _run(
        ["train", "--model", "anomalib_repair.CRAS", "--data", "MVTecFolder", "--data.root", str(missing)], tmp_path
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(missing) in last
    assert "Traceback" not in result.stderr
