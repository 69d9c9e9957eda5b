"""The real `anomalib` command line with our model and datamodule, in a subprocess."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_models import TINY_CLI_ARGS

ANOMALIB = Path(sys.executable).parent / "anomalib"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [str(ANOMALIB), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def _table(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as handle:
        return {row["category"]: row for row in csv.DictReader(handle)}


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


def _cli_lifecycle(name: str, root: Path, demo_root: Path) -> None:
    """train → test (same table) → predict (maps and overlays) → export torch/onnx/openvino, all via the CLI."""
    model = ["--model", f"anomalib_repair.{name}"]
    data = ["--data", "MVTecFolder", "--data.root", str(demo_root), "--data.categories", "[disc, weave]"]
    data += ["--data.num_workers", "0", "--data.train_batch_size", "8"]
    tiny = TINY_CLI_ARGS[name]
    trained = _run(["train", *model, *data, *tiny, "--trainer.max_epochs", "2"], root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = root / "results" / name / "MVTecFolder" / "disc+weave" / "v0"
    first = _table(run_dir / "per_category_metrics.csv")
    checkpoint = run_dir / "weights" / "lightning" / "model.ckpt"

    (run_dir / "per_category_metrics.csv").unlink()
    tested = _run(["test", *model, *data, *tiny, "--ckpt_path", str(checkpoint)], root)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert _table(next(root.rglob("per_category_metrics.csv"))) == first

    images = demo_root / "disc" / "test" / "hole"
    predict_root = root / "predicted"
    predicted = _run(
        ["predict", *model, *tiny, "--data", str(images), "--ckpt_path", str(checkpoint),
         "--default_root_dir", str(predict_root)],
        root,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    pictures = list(predict_root.rglob("*.png"))
    assert len(pictures) >= len(list(images.glob("*.png"))), "one overlay picture per predicted image"

    for export_type, suffix in (("torch", ".pt"), ("onnx", ".onnx"), ("openvino", ".xml")):
        exported = _run(
            ["export", *model, *tiny, "--export_type", export_type, "--ckpt_path", str(checkpoint),
             "--export_root", str(root / "exported")],
            root,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr[-3000:]
        assert list((root / "exported" / "weights" / export_type).glob(f"*{suffix}")), export_type


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_lifecycle_cras(tmp_path, demo_root):
    _cli_lifecycle("CRAS", tmp_path, demo_root)


@pytest.mark.slow
@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize("name", sorted(TINY_CLI_ARGS))
def test_cli_lifecycle_every_model(name, tmp_path, demo_root):
    _cli_lifecycle(name, tmp_path, demo_root)


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize("name", sorted(TINY_CLI_ARGS))
def test_cli_resolves_our_model_and_the_short_data_name(name, tmp_path):
    """`anomalib train --model anomalib_repair.X --data MVTec --data.root PATH`: word order as in anomalib."""
    result = _run(
        ["train", "--model", f"anomalib_repair.{name}", "--data", "MVTec", "--data.root", str(tmp_path),
         "--print_config"],
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"class_path: anomalib_repair.{name}" in result.stdout
    assert "class_path: anomalib_repair.MVTec\n" in result.stdout
