"""The real `anomalib` command line with our model and datamodule, in a subprocess."""

from __future__ import annotations

import csv
import inspect
import json
import math
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import anomalib_repair
from cli_runner import ANOMALIB, checkpoint_only_env, offline_env, parse_cli_commands, read_table, run_cli
from tiny_models import TINY_CLI_ARGS

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--model.backbone", "tf_efficientnet_lite0.pypi",
    "--model.layers", "[blocks.2, blocks.4]",
    "--model.image_size", "64", "--model.crop_size", "64",
    "--model.embed_dim", "128", "--model.noise_std", "1.0",
]  # fmt: skip


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_missing_dataset_root_is_one_clear_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli(
        ["train", "--model", "anomalib_repair.CRAS", "--data", "MVTecFolder", "--data.root", str(missing)], tmp_path
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(missing) in last
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------- bad input, one line
def _demo_copy(demo_root: Path, target: Path) -> Path:
    for name in ("disc", "weave"):
        shutil.copytree(demo_root / name, target / name)
    return target


def _assert_one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle in last, last
    return last


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_truncated_image_in_a_loader_worker_is_one_line_naming_it(tmp_path, demo_root):
    # The up-front check is off, so the decoding error happens in a data loader worker process.
    root = _demo_copy(demo_root, tmp_path / "data")
    bad = sorted((root / "weave" / "train" / "good").glob("*.png"))[2]
    bad.write_bytes(bad.read_bytes()[:300])
    data = ["--data", "MVTecFolder", "--data.root", str(root), "--data.verify_images", "false"]
    data += ["--data.num_workers", "1", "--data.train_batch_size", "16"]
    result = run_cli(["train", "--model", "anomalib_repair.CRAS", *data, *TINY, "--trainer.max_epochs", "1"], tmp_path)
    _assert_one_error_line(result, str(bad), "replace or remove")


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_offline_without_weights_is_one_line_naming_the_option(tmp_path, demo_root):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "th")}
    data = ["--data", "MVTecFolder", "--data.root", str(demo_root), "--data.num_workers", "0"]
    model = ["--model", "anomalib_repair.CRAS", "--model.image_size", "64", "--model.crop_size", "64"]
    result = run_cli(["train", *model, *data, "--trainer.max_epochs", "1"], tmp_path, env)
    _assert_one_error_line(result, "backbone_weights", "wide_resnet50_2")


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("layers", ["Unknown layer 'layer2'", "tf_efficientnet_lite0.pypi", "blocks.0, blocks.1", "--model.layers"]),
        ("category", ["Unknown MVTec category nope", "bottle"]),
        ("empty_predict", ["No images to predict", "empty"]),
        ("missing_checkpoint", ["Checkpoint not found", "nowhere.ckpt"]),
        ("export_without_checkpoint", ["export needs a trained model", "--ckpt_path"]),
    ],
)
def test_cli_bad_arguments_are_one_line(case, needles, tmp_path, demo_root):
    model = ["--model", "anomalib_repair.CRAS"]
    data = ["--data", "MVTecFolder", "--data.root", str(demo_root), "--data.num_workers", "0"]
    empty = tmp_path / "empty"
    empty.mkdir()
    args = {
        "layers": ["fit", *model, "--model.backbone", "tf_efficientnet_lite0.pypi", *data],  # WRN taps on Lite0
        "category": ["fit", *model, "--data", "MVTec", "--data.root", str(demo_root), "--data.categories", "[nope]"],
        "empty_predict": ["predict", *model, "--data", str(empty), "--ckpt_path", str(ROOT / "pyproject.toml")],
        "missing_checkpoint": ["test", *model, *data, "--ckpt_path", str(tmp_path / "nowhere.ckpt")],
        "export_without_checkpoint": ["export", *model, "--export_type", "onnx"],
    }[case]
    _assert_one_error_line(run_cli(args, tmp_path), *needles)


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_seed_everything_gives_the_same_metrics_twice(tmp_path, demo_root):
    """anomalib's CLI parses ``--seed_everything`` without applying it; our classes apply it (same table twice)."""
    data = ["--data", "MVTecFolder", "--data.root", str(demo_root), "--data.categories", "[disc, weave]"]
    data += ["--data.num_workers", "0", "--data.train_batch_size", "8"]
    command = ["train", "--model", "anomalib_repair.CRAS", *data, *TINY, "--trainer.max_epochs", "1"]
    tables = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        result = run_cli([*command, "--seed_everything", "7"], tmp_path / run)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "applying --seed_everything 7" in result.stdout + result.stderr
        tables.append(read_table(next((tmp_path / run).rglob("per_category_metrics.csv"))))
    assert tables[0] == tables[1]


# ---------------------------------------------------------------------------------------------- a real kill
KILL_TOLERANCE = 1e-6  # every metric of the killed + resumed run vs. the uninterrupted one (observed: identical)
TRAIN_SCRIPT = Path(__file__).with_name("ddp_train.py")


def _script(args: list[str]) -> list[str]:
    return [sys.executable, str(TRAIN_SCRIPT), *args]


def _kill_after_step(command: list[str], steps_dir: Path, step: int) -> None:
    """Start ``command`` and SIGKILL it as soon as its step checkpoint ``step`` (or a later one) exists."""
    env = offline_env()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            saved = [int(path.stem.split("=")[1]) for path in steps_dir.glob("step=*.ckpt")]
            if saved and max(saved) >= step:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def _mvtec_named_copy(demo_root: Path, target: Path) -> Path:
    """The demo's ``disc`` and ``weave`` under two MVTec AD category names, so ``--data MVTec`` can read them."""
    for demo, mvtec in (("disc", "bottle"), ("weave", "carpet")):
        shutil.copytree(demo_root / demo, target / mvtec)
    return target


def _exports_with_the_checkpoint_only(model: list[str], checkpoint: Path, root: Path, run_dir: Path) -> None:
    """torch, ONNX and OpenVINO exports from the checkpoint (network refused): where they go, what they print."""
    guarded = checkpoint_only_env(root / "guard")
    for export_type, suffix in (("torch", ".pt"), ("onnx", ".onnx"), ("openvino", ".xml")):
        # openvino without --export_root: it goes to the checkpoint's own run folder, not a shared results/weights
        where = [] if export_type == "openvino" else ["--export_root", str(root / "exported")]
        # a model argument that contradicts the checkpoint is named in one line (the checkpoint's value is used)
        contradicting = ["--model.image_size", "96"] if export_type == "onnx" else []
        exported = run_cli(
            ["export", *model, *contradicting, "--export_type", export_type, "--ckpt_path", str(checkpoint), *where],
            root,
            guarded,
        )
        assert exported.returncode == 0, exported.stderr[-3000:]
        ignored = [line for line in exported.stderr.splitlines() if "export builds the model the checkpoint" in line]
        assert len(ignored) == (1 if contradicting else 0), exported.stderr[-2000:]
        assert not contradicting or "--model.image_size 96 (checkpoint: " in ignored[0]
        folder = (root / "exported" if where else run_dir) / "weights" / export_type
        files = list(folder.glob(f"*{suffix}"))
        assert files, export_type
        assert f"Exported model: {files[0]}" in exported.stdout, exported.stdout[-2000:]
        output = exported.stdout + exported.stderr
        assert output.count("\n") < 150, f"{export_type} export printed {output.count(chr(10))} lines"


def _cli_lifecycle(name: str, root: Path, demo_root: Path) -> None:
    """fit → validate → train → test (same table) → predict (maps and overlays) → export ×3, all via the CLI.

    test, predict and export get the checkpoint and nothing else of the model's arguments.

    Uses the exact form of anomalib's docs: ``anomalib train --model anomalib_repair.X --data MVTec --data.root PATH``.
    """
    model = ["--model", f"anomalib_repair.{name}"]
    mvtec_root = _mvtec_named_copy(demo_root, root / "mvtec")
    data = ["--data", "MVTec", "--data.root", str(mvtec_root), "--data.categories", "[bottle, carpet]"]
    data += ["--data.num_workers", "0", "--data.train_batch_size", "8"]
    tiny = TINY_CLI_ARGS[name]

    fitted_root = root / "fit"
    fit_args = ["fit", *model, *data, *tiny, "--trainer.max_epochs", "1", "--default_root_dir", str(fitted_root)]
    fitted = run_cli(fit_args, root)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    fit_checkpoints = list(fitted_root.rglob("*.ckpt"))
    assert fit_checkpoints, "fit writes a checkpoint"
    validated = run_cli(["validate", *model, *data, *tiny, "--ckpt_path", str(fit_checkpoints[0])], root)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert "Validation" in validated.stdout, validated.stdout[-3000:]  # thresholds only: metrics are test's

    trained = run_cli(["train", *model, *data, *tiny, "--trainer.max_epochs", "2"], root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = root / "results" / name / "MVTec" / "bottle+carpet" / "v0"
    first = read_table(run_dir / "per_category_metrics.csv")
    assert set(first) >= {"bottle", "carpet"}
    checkpoint = run_dir / "weights" / "lightning" / "model.ckpt"

    (run_dir / "per_category_metrics.csv").unlink()
    # test, predict and export with the checkpoint only: its saved arguments rebuild the tiny model; no network and
    # no packaged backbone weights (the guard), so the backbone's weights can only come from the checkpoint
    guarded = checkpoint_only_env(root / "guard")
    tested = run_cli(["test", *model, *data, "--ckpt_path", str(checkpoint)], root, guarded)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert read_table(next(root.rglob("per_category_metrics.csv"))) == first

    images = demo_root / "disc" / "test" / "hole"
    predict_root = root / "predicted"
    predicted = run_cli(
        ["predict", *model, "--data", str(images), "--ckpt_path", str(checkpoint),
         "--default_root_dir", str(predict_root)],
        root,
        guarded,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    pictures = list(predict_root.rglob("*.png"))
    assert len(pictures) >= len(list(images.glob("*.png"))), "one overlay picture per predicted image"
    table = next(predict_root.rglob("predictions.csv"))
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["image_path"]).name for row in rows) == sorted(p.name for p in images.glob("*.png"))
    assert all(0.0 <= float(row["pred_score"]) <= 1.0 and row["pred_label"] in {"0", "1"} for row in rows)
    said = {
        line.split(" in ", 1)[0].split(":")[-1].strip(): line.rsplit(" in ", 1)[1].strip()
        for line in predicted.stdout.splitlines()
        if " in " in line and ("scores" in line or "pictures" in line)
    }
    assert Path(said["scores"]).resolve() == table.resolve(), predicted.stdout[-2000:]
    assert list(Path(said["pictures"]).rglob("*.png")), "the printed pictures folder holds the pictures"
    assert "Unexpected keys" not in predicted.stdout + predicted.stderr, "timm's headless-backbone warning"

    _exports_with_the_checkpoint_only(model, checkpoint, root, run_dir)
    assert not (root / "results" / "weights").exists(), "no export into the shared results/weights folder"


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
def test_cli_lifecycle_cras(tmp_path, demo_root):
    _cli_lifecycle("CRAS", tmp_path, demo_root)


@pytest.mark.slow
@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize("name", sorted(TINY_CLI_ARGS))
def test_cli_lifecycle_every_model(name, tmp_path, demo_root):
    _cli_lifecycle(name, tmp_path, demo_root)


@pytest.fixture(scope="module")
def parsed_model_commands(tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Per model: ``--print_config`` and ``--model.help`` of ``anomalib train --model anomalib_repair.X``."""
    folder = tmp_path_factory.mktemp("model_commands")
    commands = {}
    for name in sorted(TINY_CLI_ARGS):
        model = f"anomalib_repair.{name}"
        data = ["--data", "MVTec", "--data.root", str(folder)]
        commands[name, "config"] = ["train", "--model", model, *data, "--print_config"]
        commands[name, "help"] = ["train", "--model", model, "--model.help", model]
    results = parse_cli_commands(list(commands.values()), folder, folder, offline_env())
    return dict(zip(commands, results, strict=True))


@pytest.mark.parametrize("name", sorted(TINY_CLI_ARGS))
def test_cli_resolves_our_model_and_the_short_data_name(name, parsed_model_commands):
    """`anomalib train --model anomalib_repair.X --data MVTec --data.root PATH`: word order as in anomalib.

    Parsed by anomalib's own CLI class (``parse_commands.py``); the console script itself runs in every other test
    of this file.
    """
    result = parsed_model_commands[name, "config"]
    assert result["code"] == 0, result["stderr"]
    assert f"class_path: anomalib_repair.{name}" in result["stdout"]
    assert "class_path: anomalib_repair.MVTec\n" in result["stdout"]
    helped = parsed_model_commands[name, "help"]
    assert helped["code"] == 0, helped["stderr"]
    options = inspect.signature(getattr(anomalib_repair, name).__init__).parameters
    missing = [
        option
        for option, parameter in options.items()
        if option != "self"
        and parameter.kind is not parameter.VAR_KEYWORD  # CRR's flat names of earlier releases: Python only
        and f"--model.{option} " not in helped["stdout"]
        and f"--model.{option}." not in helped["stdout"]  # an option group (CRR's stage1, …): its options
    ]
    assert not missing, f"options not settable from the CLI: {missing}"


def _train_script(args: list[str]) -> None:
    env = offline_env()
    done = subprocess.run(_script(args), env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kill_at", "resume_from"),
    [
        ("CRAS", 14, range(12, 32)),  # CRAS: 2 optimiser steps a batch, 4 batches an epoch, 4 epochs
        ("CRR", 8, range(7, 10)),  # tiny CRR: stage I = steps 0-5, stage II = steps 6-9: killed mid-stage-II
    ],
)
def test_run_killed_mid_training_resumes_to_the_same_metrics(tmp_path, demo_root, name, kill_at, resume_from):
    """A real SIGKILL of a training process (tests/integration/ddp_train.py, one process) after a step checkpoint."""
    every = 2 if name == "CRAS" else 1
    common = ["--root", str(demo_root), "--epochs", "4", "--batch", "4", "--steps-every", str(every), "--seed", "7"]
    common += ["--model", name]
    _train_script([*common, "--out", str(tmp_path / "uninterrupted")])
    reference = json.loads((tmp_path / "uninterrupted" / "result.json").read_text())["metrics"]

    killed = tmp_path / "killed"
    steps_dir = killed / "steps"
    _kill_after_step(_script([*common, "--out", str(killed)]), steps_dir, step=kill_at)
    last = steps_dir / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)  # complete and loadable after the kill
    # last.ckpt is written right after step=<k>.ckpt: a kill in between leaves the previous, complete one
    assert checkpoint["global_step"] in resume_from
    for path in steps_dir.glob("*.ckpt"):
        torch.load(path, map_location="cpu", weights_only=False)

    _train_script([*common, "--out", str(tmp_path / "resumed"), "--ckpt-path", str(last)])
    final = json.loads((tmp_path / "resumed" / "result.json").read_text())["metrics"]
    assert final.keys() == reference.keys()
    for key, value in reference.items():
        if not math.isnan(value):
            assert abs(final[key] - value) <= KILL_TOLERANCE, (key, final[key], value)


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize(
    ("stop", "exit_code"),
    [
        pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
        pytest.param(signal.SIGINT, 1, id="Ctrl-C", marks=pytest.mark.slow),
    ],
)
def test_cli_training_stopped_by_a_signal_saves_its_state_and_prints_the_resume_command(
    tmp_path, demo_root, stop, exit_code
):
    """A real signal to `anomalib train` mid-fit: non-zero exit, interrupted.ckpt, a resume command that works."""
    mvtec_root = _mvtec_named_copy(demo_root, tmp_path / "mvtec")
    args = ["train", "--model", "anomalib_repair.CRAS", "--data", "MVTec", "--data.root", str(mvtec_root)]
    args += ["--data.categories", "[bottle, carpet]", "--data.num_workers", "0", "--data.train_batch_size", "8"]
    args += [*TINY_CLI_ARGS["CRAS"], "--trainer.max_epochs", "40"]
    args += ["--trainer.callbacks+=anomalib_repair.callbacks.StepCheckpoint"]
    args += ["--trainer.callbacks.every_n_train_steps=2"]
    env = offline_env()
    process = subprocess.Popen(
        [str(ANOMALIB), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_dir = tmp_path / "results" / "CRAS" / "MVTec" / "bottle+carpet" / "v0"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if (run_dir / "weights" / "steps" / "last.ckpt").exists():
            process.send_signal(stop)
            break
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == exit_code, stderr[-3000:]

    saved = run_dir / "weights" / "lightning" / "interrupted.ckpt"
    state = torch.load(saved, map_location="cpu", weights_only=False)
    assert state["global_step"] >= 2 and state["epoch"] < 40
    assert f"its state is saved in {saved}" in stderr
    resume = next(line for line in stderr.splitlines() if line.strip().startswith("resume: "))
    command = shlex.split(resume.split("resume: ", 1)[1])
    assert command[0] == "anomalib" and command[-2:] == ["--ckpt_path", str(saved)]
    assert command[1:-2] == args, "the same command line, continued from the saved state"

    shorter = ["--trainer.max_epochs", str(state["epoch"] + 2)]  # the same run, ended sooner to keep the test short
    resumed = run_cli([*command[1:-2], *shorter, "--ckpt_path", str(saved)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert any((tmp_path / "results").rglob("per_category_metrics.csv")), "the resumed run goes on to its test"
