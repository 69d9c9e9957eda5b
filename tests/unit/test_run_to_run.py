"""benchmarks/run_to_run.py: the spread of the benchmark's speed columns between recorded runs."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_to_run", ROOT / "benchmarks" / "run_to_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_to_run"] = module
    spec.loader.exec_module(module)
    return module


run_to_run = _load()
FIELDS = ["method", "category", "ms_per_image_b32", "floor_ms_per_image_b32", "x_backbone_b32"]
FIELDS += ["image_AUROC", "pixel_AUROC", "pixel_AUPRO"]


def _run(folder: Path, rows: list[dict[str, object]], fields: list[str] = FIELDS) -> Path:
    folder.mkdir(parents=True)
    with (folder / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return folder


def _row(method: str, ms: float, ratio: float, auroc: float = 0.9, category: str = "mean") -> dict[str, object]:
    return {
        "method": method,
        "category": category,
        "ms_per_image_b32": ms,
        "floor_ms_per_image_b32": ms / ratio,
        "x_backbone_b32": ratio,
        "image_AUROC": auroc,
        "pixel_AUROC": 0.8,
        "pixel_AUPRO": 0.7,
    }


def test_spreads_are_per_method_over_the_methods_every_run_has(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", [_row("cras", 20.0, 2.0), _row("padim", 10.0, 1.5), _row("cras", 99, 9, 0.1, "x")])
    second = _run(tmp_path / "b", [_row("cras", 15.0, 2.5, auroc=0.95), _row("glass", 30.0, 3.0)])
    rows = run_to_run.compare_runs([first, second])
    assert [row["method"] for row in rows] == ["cras"]  # padim and glass are each in one run only
    (row,) = rows
    assert row["ms_per_image_b32_run1"] == 20.0 and row["ms_per_image_b32_run2"] == 15.0
    assert row["ms_per_image_b32_spread_pct"] == 25.0
    assert row["x_backbone_b32_spread"] == pytest.approx(0.5)
    assert row["image_AUROC_spread"] == pytest.approx(0.05)
    assert row["pixel_AUROC_spread"] == 0.0  # the per-category row ("x") is not read


def test_runs_without_a_paired_floor_or_too_few_runs_are_refused(tmp_path: Path, capsys) -> None:
    old = _run(tmp_path / "old", [_row("cras", 20.0, 2.0)], [f for f in FIELDS if f != "floor_ms_per_image_b32"])
    new = _run(tmp_path / "new", [_row("cras", 15.0, 2.5)])
    with pytest.raises(run_to_run.RunMismatchError, match="no paired backbone floor"):
        run_to_run.compare_runs([old, new])
    with pytest.raises(run_to_run.RunMismatchError, match="at least two"):
        run_to_run.compare_runs([new])
    assert run_to_run.main(["--runs", str(old), str(new), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line that says what is wrong and what to pick
    assert not (tmp_path / "out").exists()


def test_main_writes_a_table_the_docs_can_render(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", [_row("cras", 20.0, 2.0)])
    second = _run(tmp_path / "b", [_row("cras", 16.0, 2.1)])
    out = tmp_path / "out"
    assert run_to_run.main(["--runs", str(first), str(second), "--output", str(out)]) == 0
    with (out / "results.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "cras" and float(row["ms_per_image_b32_spread_pct"]) == 20.0
    assert (out / "results.json").exists()
