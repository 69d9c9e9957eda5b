"""The whole anomalib lifecycle for every model through the Python API, on tiny offline settings.

fit → test → validate → predict → export (torch, onnx, openvino) → anomalib's inferencers, with our unified
datamodule; the CLI's ``test``/``predict``/``export`` with nothing but the trained checkpoint; fit/test/predict
with anomalib's own single-category ``MVTecAD`` and ``Folder``; checkpoints in anomalib's weights-only mode;
``list_models``/``get_model``. Each model comes from ``tests/tiny_models.py``.

Tolerance of the exported models against the Lightning model: 1e-4 absolute on image scores and anomaly maps
(measured ≤ 2e-6 for CRAS; all run in float32).
"""

from __future__ import annotations

import csv
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import Folder, MVTecAD
from anomalib.deploy import ExportType, OpenVINOInferencer, TorchInferencer
from anomalib.engine import Engine
from anomalib.models import get_model, list_models
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from lightning.pytorch import seed_everything

import anomalib_repair
from anomalib_repair import MVTecFolder
from checkpoint_only import WEIGHTS_PACKAGE, refuse_network_and_weights
from cli_runner import ANOMALIB, checkpoint_only_env, read_table, run_cli
from tiny_models import TINY_MODELS

ATOL = 1e-4
CATEGORIES = ["disc", "weave"]


@dataclass
class Trained:
    """A model trained on the unified demo data, with its engine and folders."""

    name: str
    model: AnomalibModule
    engine: Engine
    datamodule: MVTecFolder
    root: Path
    results: dict[str, float]
    exports: dict[str, Path] = field(default_factory=dict)


def _engine(root: Path, **kwargs: object) -> Engine:
    options: dict[str, object] = {
        "max_epochs": 2,
        "default_root_dir": root,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
    }
    options.update(kwargs)
    return Engine(**options)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def trained(
    request: pytest.FixtureRequest, demo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    name = request.param
    root = tmp_path_factory.mktemp(f"lifecycle_{name}")
    seed_everything(0)
    datamodule = MVTecFolder(
        root=demo_root, categories=CATEGORIES, train_batch_size=8, eval_batch_size=8, num_workers=0
    )
    model = TINY_MODELS[name]()
    engine = _engine(root)
    engine.fit(model=model, datamodule=datamodule)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    yield Trained(name, model, engine, datamodule, root, results)


def _checkpoint(trained: Trained) -> Path:
    path = trained.root / "saved.ckpt"
    if not path.exists():
        trained.engine.trainer.save_checkpoint(path)
    return path


def _exported(trained: Trained, export_type: str) -> Path:
    """The trained model exported once per type (the tests that need the same export share it)."""
    if export_type not in trained.exports:
        folder = trained.root / f"export_{export_type}"
        exported = trained.engine.export(model=trained.model, export_type=ExportType(export_type), export_root=folder)
        assert exported is not None and exported.exists()
        trained.exports[export_type] = Path(exported)
    return trained.exports[export_type]


def _predicted(trained: Trained) -> dict[str, tuple[float, torch.Tensor, bool]]:
    """Per test image: score, map and decision of ``predict`` (post-processed by the image's own category)."""
    batches = trained.engine.predict(model=trained.model, datamodule=trained.datamodule, return_predictions=True)
    assert batches is not None
    out: dict[str, tuple[float, torch.Tensor, bool]] = {}
    for batch in batches:
        for path, score, anomaly_map, label in zip(
            batch.image_path, batch.pred_score, batch.anomaly_map, batch.pred_label, strict=True
        ):
            out[str(path)] = (float(score), anomaly_map.squeeze().detach().cpu(), bool(label))
    return out


def test_test_metrics_are_per_category_and_finite(trained: Trained) -> None:
    for key in ("image_AUROC", "pixel_AUROC", *(f"image_AUROC/{category}" for category in CATEGORIES)):
        assert key in trained.results and not math.isnan(trained.results[key]), key
    assert any(trained.root.rglob("per_category_metrics.csv"))


def test_validate_recomputes_finite_thresholds(trained: Trained) -> None:
    """As for anomalib's models, validation feeds the post-processor's thresholds (metrics are a test affair)."""
    post_processor = trained.model.post_processor
    assert isinstance(post_processor, PostProcessor)
    learned = float(post_processor.image_threshold)
    post_processor._image_threshold.fill_(float("nan"))  # forget what fit learned: validate must set it again
    assert math.isnan(float(post_processor._image_threshold))
    assert trained.engine.validate(model=trained.model, datamodule=trained.datamodule, verbose=False) is not None
    threshold = float(post_processor.image_threshold)
    assert math.isfinite(threshold)
    assert threshold == pytest.approx(learned, rel=1e-5)  # same model, same validation data


def _nothing_but_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network and no packaged backbone weights from here on (checked): only the checkpoint can rebuild a model."""
    refuse_network_and_weights(monkeypatch)
    with pytest.raises(ImportError):
        __import__(WEIGHTS_PACKAGE)
    with pytest.raises(OSError, match="refused"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_checkpoint_reloads_weights_only_and_reproduces_the_test_metrics(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``M.load_from_checkpoint(CK)`` with nothing but the checkpoint: same test metrics."""
    checkpoint = _checkpoint(trained)
    _nothing_but_the_checkpoint(monkeypatch)
    torch.load(checkpoint, weights_only=True, map_location="cpu")  # anomalib's safe loading mode
    restored = type(trained.model).load_from_checkpoint(checkpoint)  # hyper-parameters come from the checkpoint
    engine = _engine(trained.root / "retest")
    again = engine.test(model=restored, datamodule=trained.datamodule, verbose=False)[0]
    for key, value in trained.results.items():
        assert again[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_predict_gives_a_map_per_image_and_writes_pictures(trained: Trained, tmp_path: Path) -> None:
    engine = _engine(tmp_path / "predict")  # a fresh folder: only predict can have written pictures there
    batches = engine.predict(model=trained.model, datamodule=trained.datamodule, return_predictions=True)
    assert batches is not None
    predictions = {
        str(path): m for batch in batches for path, m in zip(batch.image_path, batch.anomaly_map, strict=True)
    }
    test_images = [path for path in Path(trained.datamodule.root).rglob("test/*/*.png") if path.parts[-4] in CATEGORIES]
    assert len(predictions) == len(test_images)
    assert all(anomaly_map.squeeze().shape == (64, 64) for anomaly_map in predictions.values())
    pictures = [path for path in (tmp_path / "predict").rglob("*.png") if "images" in path.parts]
    assert len(pictures) == len(test_images), "one picture per predicted image"
    assert {category for category in CATEGORIES if any(category in path.parts for path in pictures)} == set(CATEGORIES)
    scores = {
        str(path): float(score)
        for batch in batches
        for path, score in zip(batch.image_path, batch.pred_score, strict=True)
    }
    with next((tmp_path / "predict").rglob("predictions.csv")).open() as handle:
        table = {row["image_path"]: float(row["pred_score"]) for row in csv.DictReader(handle)}
    assert table.keys() == scores.keys(), "one row per predicted image"
    assert all(table[path] == pytest.approx(scores[path], abs=1e-6) for path in scores)


@pytest.mark.parametrize("export_type", ["torch", "onnx", "openvino"])
def test_export_and_inferencers_give_the_lightning_scores(
    trained: Trained, export_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _predicted(trained)
    exported = _exported(trained, export_type)
    if export_type == "torch":
        monkeypatch.setenv("TRUST_REMOTE_CODE", "1")  # anomalib refuses pickled models unless the user opts in
        inferencer: TorchInferencer | OpenVINOInferencer = TorchInferencer(path=exported, device="cpu")
    else:  # OpenVINO reads both its IR and the ONNX file
        monkeypatch.chdir(trained.root)  # its compiled-model cache goes to ./openvino_cache, not into the checkout
        # float32 on every CPU: OpenVINO runs bfloat16 by default where the CPU has avx512_bf16/AMX, which moves
        # scores by ~1e-2 (a precision choice of the deployment, not a difference of the exported graph)
        inferencer = OpenVINOInferencer(path=exported, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    # the exported model infers each image's category and applies that category's statistics: its scores, maps
    # and decisions are those of predict, which post-processes by the image's known category
    chosen = [path for category in CATEGORIES for path in sorted(reference) if f"/{category}/" in path][::4]
    assert {category for category in CATEGORIES if any(f"/{category}/" in path for path in chosen)} == set(CATEGORIES)
    for path in chosen:
        prediction = inferencer.predict(path)
        score = float(np.asarray(torch.as_tensor(prediction.pred_score).detach()).ravel()[0])
        anomaly_map = torch.as_tensor(np.asarray(torch.as_tensor(prediction.anomaly_map).detach())).squeeze()
        label = bool(np.asarray(torch.as_tensor(prediction.pred_label).detach()).ravel()[0])
        assert score == pytest.approx(reference[path][0], abs=ATOL), path
        torch.testing.assert_close(anomaly_map.float(), reference[path][1].float(), atol=ATOL, rtol=0)
        if abs(reference[path][0] - 0.5) > ATOL:  # at the threshold itself (validation here is the test set), a
            assert label == reference[path][2], (path, score)  # 1e-6 difference of the graphs may flip a label


def _readme_torch_inferencer_command() -> str:
    """The README's ``TorchInferencer`` line (between ``<!-- torch-inferencer -->`` markers), continuations joined."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text[text.index("<!-- torch-inferencer -->") : text.index("<!-- /torch-inferencer -->")]
    body = block.split("```bash", 1)[1].split("```", 1)[0]
    return body.replace("\\\n", " ").strip()


@pytest.mark.parametrize("trained", ["CRAS"], indirect=True)  # the line is the same for every model
def test_the_readme_torch_inferencer_line_runs_as_written(trained: Trained, tmp_path: Path) -> None:
    """The README's ``TRUST_REMOTE_CODE=1 python -c …TorchInferencer…`` line, run by bash in a subprocess."""
    command = _readme_torch_inferencer_command()
    assert command.startswith("TRUST_REMOTE_CODE=1 python -c") and "RUN/weights/torch/model.pt" in command
    trained.engine.export(model=trained.model, export_type=ExportType.TORCH, export_root=tmp_path / "RUN")
    reference = _predicted(trained)
    image = sorted(reference)[0]
    image_file = tmp_path / "image.png"
    image_file.write_bytes(Path(image).read_bytes())
    source = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(source), os.environ.get("PYTHONPATH"))))}  # fmt: skip
    env.pop("TRUST_REMOTE_CODE", None)  # the line sets it itself
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?", result.stdout.strip().splitlines()[-1])
    assert printed and float(printed[0]) == pytest.approx(reference[image][0], abs=ATOL), result.stdout[-500:]


def test_an_exported_model_given_an_image_of_another_size_scores_as_the_validated_pipeline(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A camera image larger than the model's input and not square: the exported graph resizes it with antialiasing.

    The reference is what ``anomalib test`` computes: torchvision's ``Resize(antialias=True)`` (the pre-processor's
    transform), then the model. anomalib's own export transform would resize without antialiasing.
    """
    from anomalib.data.utils import read_image
    from PIL import Image
    from torchvision.transforms.v2 import Compose, Normalize

    source = sorted(p for p in trained.datamodule.test_data.samples.image_path if "/good/" not in p)[0]
    raw_path = tmp_path / "camera.png"
    Image.open(source).convert("RGB").resize((157, 93), Image.Resampling.BICUBIC).save(raw_path)
    raw = read_image(raw_path, as_tensor=True)
    model = trained.model.eval()
    # the validated pipeline's resize (and crop), torchvision's; the model's forward then normalises
    geometry = Compose([step for step in model.pre_processor.transform.transforms if not isinstance(step, Normalize)])
    with torch.no_grad():
        reference = model(geometry(raw)[None])
    exported = _exported(trained, "openvino")  # the same trained model's export as the inferencer test's
    monkeypatch.chdir(tmp_path)
    inferencer = OpenVINOInferencer(path=exported, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    prediction = inferencer.predict(raw_path)
    score = float(np.asarray(prediction.pred_score).ravel()[0])
    anomaly_map = torch.as_tensor(np.asarray(prediction.anomaly_map)).squeeze().float()
    assert score == pytest.approx(float(reference.pred_score.ravel()[0]), abs=ATOL)
    torch.testing.assert_close(anomaly_map, reference.anomaly_map.squeeze().float(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_anomalib_single_category_datamodules(name: str, demo_root: Path, tmp_path: Path) -> None:
    """anomalib's own ``MVTecAD(category=…)`` and ``Folder`` work unchanged (one category, no category index)."""
    seed_everything(0)
    folder = demo_root / "weave"  # mask file names differ from image names: anomalib's Folder matches by order
    datamodules = {
        "MVTecAD": MVTecAD(root=demo_root, category="disc", train_batch_size=8, eval_batch_size=8, num_workers=0),
        "Folder": Folder(
            name="weave",
            root=folder,
            normal_dir="train/good",
            abnormal_dir="test/hole",
            normal_test_dir="test/good",
            mask_dir="ground_truth/hole",
            train_batch_size=8,
            eval_batch_size=8,
            num_workers=0,
        ),
    }
    for label, datamodule in datamodules.items():
        model = TINY_MODELS[name]()
        engine = _engine(tmp_path / label, max_epochs=1)
        engine.fit(model=model, datamodule=datamodule)
        results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
        assert not math.isnan(results["image_AUROC"]), (label, results)
        assert not any("/" in key for key in results), (label, results)  # one category: no per-category keys
        batches = engine.predict(model=model, datamodule=datamodule, return_predictions=True)
        assert batches and batches[0].anomaly_map is not None, label
        if label == "MVTecAD":  # the exported graph is that of a one-category model whichever datamodule fed it
            exported = engine.export(model=model, export_type=ExportType.ONNX, export_root=tmp_path / label / "export")
            assert exported is not None and exported.exists(), label


def test_anomalib_finds_our_models_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        msg = "network access during default construction"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    names = list_models(case="pascal")
    for name in TINY_MODELS:
        assert name in names, name
        model = get_model(name)  # default arguments: paper backbones, whose weights are resolved only in `setup`
        assert isinstance(model, getattr(anomalib_repair, name))


def test_checkpoint_alone_rebuilds_a_default_constructed_model(
    trained: Trained, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Engine().test(model=<Model>(), ckpt_path=CK)`` (what ``anomalib test --model ... --ckpt_path CK`` does).

    The default construction is the paper's network (another backbone, other sizes); the checkpoint's saved
    arguments rebuild the tiny one before its weights load, with nothing but the checkpoint (no network, no packaged
    backbone weights), and the metrics are the trained model's.
    """
    checkpoint = _checkpoint(trained)
    _nothing_but_the_checkpoint(monkeypatch)
    default = type(trained.model)()
    engine = _engine(trained.root / "checkpoint_only")
    with caplog.at_level("WARNING"):
        again = engine.test(model=default, datamodule=trained.datamodule, ckpt_path=str(checkpoint), verbose=False)[0]
    assert any("rebuilt as saved in the checkpoint" in record.getMessage() for record in caplog.records)
    for key, value in trained.results.items():
        assert again[key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


@pytest.mark.skipif(not ANOMALIB.exists(), reason="anomalib CLI not installed beside this interpreter")
@pytest.mark.parametrize("trained", ["CRR", "MFRNet"], indirect=True)  # CRAS: test_cli.py's lifecycle, fresh install
def test_cli_checkpoint_only_commands_run_with_the_network_refused(trained: Trained, tmp_path: Path) -> None:
    """``anomalib test|predict|export --model anomalib_repair.<M> --ckpt_path CK`` with nothing but the checkpoint.

    The checkpoint is the one ``Engine.fit`` trained here; each command runs in a subprocess with the network refused
    and the packaged backbone weights hidden. ``test`` gives the trained model's metrics; ``export`` writes the
    OpenVINO model, the factory's form.
    """
    checkpoint = _checkpoint(trained)
    guarded = checkpoint_only_env(tmp_path / "guard")
    demo_root = Path(trained.datamodule.root)
    model = ["--model", f"anomalib_repair.{trained.name}", "--ckpt_path", str(checkpoint)]
    data = ["--data", "anomalib_repair.MVTecFolder", "--data.root", str(demo_root), "--data.categories",
            f"[{', '.join(CATEGORIES)}]", "--data.num_workers", "0",
            "--default_root_dir", str(tmp_path / "test")]  # fmt: skip
    tested = run_cli(["test", *model, *data], tmp_path, guarded)
    assert tested.returncode == 0, tested.stderr[-3000:]
    table = read_table(next((tmp_path / "test").rglob("per_category_metrics.csv")))
    for category in CATEGORIES:
        assert float(table[category]["image_AUROC"]) == pytest.approx(
            trained.results[f"image_AUROC/{category}"], abs=1e-6
        )

    images = demo_root / "disc" / "test" / "hole"
    predicted = run_cli(["predict", *model, "--data", str(images), "--default_root_dir", str(tmp_path / "predict")],
                        tmp_path, guarded)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with next((tmp_path / "predict").rglob("predictions.csv")).open() as handle:
        assert len(list(csv.DictReader(handle))) == len(list(images.glob("*.png")))

    exported = run_cli(["export", *model, "--export_type", "openvino", "--export_root", str(tmp_path / "export")],
                       tmp_path, guarded)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert list((tmp_path / "export").rglob("*.xml")), exported.stdout[-2000:]
