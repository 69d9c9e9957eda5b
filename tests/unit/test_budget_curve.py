"""Budget-curve helpers: rank mapping that keeps AUROC, YAML overrides, the mean ± s.d. summary, the tie flag."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


curve = _load("budget_curve")
report = _load("budget_report")


def test_raw_scores_above_the_sigmoid_range_keep_their_auroc_through_ranks():
    scores = torch.tensor([40.0, 55.0, 61.0, 23.0, 25.0, 22.0])  # Mahalanobis-like: sigmoid would tie them all
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    assert float(binary_auroc(scores, labels)) == pytest.approx(0.5)  # torchmetrics' own sigmoid ties them
    ranks = curve.unit_ranks(scores)
    assert float(binary_auroc(ranks, labels)) == pytest.approx(1.0)
    assert ranks.min() == 0 and ranks.max() == 1
    tied = curve.unit_ranks(torch.tensor([3.0, 3.0, 1.0]))
    assert tied[0] == tied[1] and tied[2] < tied[0]


def test_overrides_are_read_as_yaml_values():
    assert curve.overrides(["noise_std=0.5", "layers=[blocks.2, blocks.4]", "feature_cache=null"]) == {
        "noise_std": 0.5,
        "layers": ["blocks.2", "blocks.4"],
        "feature_cache": None,
    }
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        curve.overrides(["noise_std"])


def test_summary_gives_mean_and_sd_over_seeds_and_keeps_the_degenerate_flag(tmp_path: Path):
    path = tmp_path / "cras_128.csv"
    rows = []
    for seed, auroc, tie in ((0, 0.90, "False"), (1, 0.94, "True")):
        for half in ("tune", "report"):
            rows.append(
                {
                    "method": "cras", "variant": "recipe", "image_size": 128, "seed": seed, "budget": 10,
                    "budget_unit": "epochs", "train_min": 2.0 + seed, "half": half, "category": "mean",
                    "image_AUROC": auroc, "pixel_AUROC": 0.9, "pixel_AUPRO": 0.7, "degenerate": tie,
                    "score_mode": "logit", "image_cache": "yes",
                }
            )  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = report.summarise(report.raw_rows(tmp_path))
    assert len(table) == 2  # one per half
    entry = next(row for row in table if row["half"] == "report")
    assert entry["seeds"] == 2
    assert entry["image_AUROC"] == pytest.approx(0.92)
    assert entry["image_AUROC_sd"] == pytest.approx(0.0283, abs=1e-4)
    assert entry["train_min"] == pytest.approx(2.5)
    assert entry["degenerate"] is True


def test_the_recorded_plan_names_only_known_methods_and_outputs_under_results():
    for entry in curve.PLAN:
        args = curve.parse_args(list(entry))
        assert args.method in (*curve.compare.OURS, *curve.PEERS, *curve.TRAINED_PEERS)
        assert str(args.output).startswith(curve.RESULTS)


def test_peers_are_drawn_at_their_best_setting_on_the_tune_half_not_the_report_half():
    rows = [
        {"method": "padim", "variant": "n_features=50", "image_size": 128, "half": "tune", "image_AUROC": 0.99},
        {"method": "padim", "variant": "n_features=50", "image_size": 128, "half": "report", "image_AUROC": 0.90},
        {"method": "padim", "variant": "n_features=100", "image_size": 128, "half": "tune", "image_AUROC": 0.95},
        {"method": "padim", "variant": "n_features=100", "image_size": 128, "half": "report", "image_AUROC": 0.99},
        {"method": "padim", "variant": "n_features=100", "image_size": 256, "half": "tune", "image_AUROC": 0.97},
        {"method": "cras", "variant": "recipe", "image_size": 128, "half": "tune", "image_AUROC": 1.0},
    ]
    assert report.best_peer_settings(rows) == {("padim", "128"): "n_features=50", ("padim", "256"): "n_features=100"}


def test_a_peer_setting_that_moves_only_the_maps_is_chosen_by_its_tune_pixel_auroc():
    rows = [
        {"method": "patchcore", "variant": "r map_sigma=4", "image_size": 128, "half": "tune", "image_AUROC": 0.98,
         "pixel_AUROC": 0.88},
        {"method": "patchcore", "variant": "r map_sigma=2", "image_size": 128, "half": "tune", "image_AUROC": 0.98,
         "pixel_AUROC": 0.90},
        {"method": "patchcore", "variant": "r map_sigma=4", "image_size": 128, "half": "report", "image_AUROC": 0.98,
         "pixel_AUROC": 0.99},
    ]  # fmt: skip
    assert report.best_peer_settings(rows) == {("patchcore", "128"): "r map_sigma=2"}
    capped = {"method": "patchcore", "variant": "r max_train=200", "image_size": 128, "half": "tune",
              "image_AUROC": 1.0, "pixel_AUROC": 1.0}  # fmt: skip
    assert report.best_peer_settings([*rows, capped]) == {("patchcore", "128"): "r map_sigma=2"}


def test_glass_is_charted_as_a_curve_at_its_tune_best_noise_and_never_from_a_capped_sweep():
    def row(variant: str, half: str, budget: str, image: float, pixel: float, method: str = "glass") -> dict:
        return {"method": method, "variant": variant, "image_size": "128", "half": half, "budget": budget,
                "image_AUROC": image, "pixel_AUROC": pixel, "score_mode": "", "image_cache": "yes",
                "image_score": ""}  # fmt: skip

    table = [
        row("gaussian_noise_std=1.0 max_train=200", "tune", "3", 1.0, 1.0),  # the capped sweep: never drawn
        row("gaussian_noise_std=1.0 max_train=200", "report", "3", 1.0, 1.0),
        row("gaussian_noise_std=0.1", "tune", "1", 0.90, 0.80),
        row("gaussian_noise_std=0.1", "tune", "3", 0.93, 0.85),
        row("gaussian_noise_std=0.1", "report", "1", 0.91, 0.81),
        row("gaussian_noise_std=0.1", "report", "3", 0.92, 0.86),
        row("gaussian_noise_std=0.3", "tune", "3", 0.92, 0.84),
        row("gaussian_noise_std=0.3", "report", "3", 0.99, 0.99),  # better on report: must not decide
        row("n_features=100", "report", "1", 0.98, 0.90, method="padim"),
        row("n_features=100", "tune", "1", 0.98, 0.90, method="padim"),
    ]
    assert report.best_peer_settings(table)[("glass", "128")] == "gaussian_noise_std=0.1"
    longer = [row("gaussian_noise_std=2.0", "tune", "3", 0.90, 0.80), row("gaussian_noise_std=2.0", "tune", "10", 1, 1)]
    assert report.best_peer_settings([*table, *longer])[("glass", "128")] == "gaussian_noise_std=0.1"  # not by length
    lines = report.chart_lines(table)
    glass = lines[("glass", "gaussian_noise_std=0.1", "128", "", "yes")]
    assert sorted(r["budget"] for r in glass) == ["1", "3"]  # both budgets: a curve
    assert all(r["half"] == "report" for r in glass)
    assert {key[:2] for key in lines} == {("glass", "gaussian_noise_std=0.1"), ("padim", "n_features=100")}


def test_map_sigmas_evaluate_the_same_weights_once_per_sigma_and_restore_the_generator(monkeypatch):
    from types import SimpleNamespace

    from anomalib_repair.components.anomaly_map import AnomalyMapGenerator

    original = AnomalyMapGenerator(sigma=4.0)
    network = SimpleNamespace(anomaly_map_generator=original)
    seen = []

    def fake_metrics(net, test_set):
        del test_set
        seen.append(net.anomaly_map_generator.blur.kernel.shape[-1])  # 2 * round(4 sigma) + 1
        return [{"half": "tune", "category": "mean", "image_AUROC": 1.0, "pixel_AUROC": 1.0}]

    monkeypatch.setattr(curve, "metrics_by_half", fake_metrics)
    rows = curve.evaluate(SimpleNamespace(model=network), None, False, None, [2.0, 8.0])
    assert seen == [17, 65]
    assert [row["map_sigma"] for row in rows] == [2.0, 8.0]
    assert network.anomaly_map_generator is original


def test_glass_is_an_epoch_trained_peer_whose_noise_std_comes_from_set(monkeypatch, tmp_path):
    """``--method glass --set gaussian_noise_std=…``: anomalib's GLASS with the benchmark's backbone and that noise."""
    methods = sys.modules[curve.compare.build_glass.__module__]
    monkeypatch.setattr(methods, "check_pretrained", lambda model: model)  # random weights: nothing to check
    args = curve.parse_args(["--method", "glass", "--budgets", "1", "3", "--set", "gaussian_noise_std=0.1",
                             "pre_trained=false", "--output", str(tmp_path / "glass.csv")])  # fmt: skip
    settings = curve.settings_for(args, seed=0)
    model = curve.build_model(args, settings, budget=None)
    assert type(model).__name__ == "Glass"
    assert model.model.gaussian_noise_std == pytest.approx(0.1)  # the std the training noise is drawn with
    assert settings.epochs == 3 and "glass" not in curve.PEERS and "glass" not in curve.STEP_BUDGET


def test_a_category_is_degenerate_when_its_scores_tie_or_its_image_auroc_is_exactly_one_half() -> None:
    assert curve.degenerate(torch.full((6,), 1.0), 0.5)
    assert curve.degenerate(torch.tensor([0.1, 0.2, 0.3, 0.4]), 0.5)  # distinct scores, no ranking
    assert not curve.degenerate(torch.tensor([0.1, 0.2, 0.3, 0.4]), 0.75)
