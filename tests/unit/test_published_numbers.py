"""Published numbers: every marked table in the READMEs and docs equals its recorded CSV; the docs hook's links."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


published = _load("published", ROOT / "benchmarks" / "published.py")
hooks = _load("docs_hooks", ROOT / "docs" / "hooks.py")


def test_every_published_table_matches_its_recorded_csv() -> None:
    assert published.stale_files() == [], "run `python benchmarks/published.py` after a recorded benchmark run"


def test_marked_blocks_exist_and_render_rows(tmp_path: Path) -> None:
    files = [path for path in published.markdown_files() if published.BLOCK.search(path.read_text())]
    assert files, "the docs publish at least one recorded table"
    rendered = published.render("benchmarks/results/latest/results.csv category=mean columns=method,image_AUROC")
    assert rendered.splitlines()[0] == "| method | I-AUROC |"
    assert "Recorded run: `benchmarks/results/latest/results.csv`" in rendered


def test_a_quoted_filter_value_may_hold_spaces() -> None:
    spec = (
        "benchmarks/results/budget_curves/summary.csv half=report method=padim image_size=128 "
        'variant="n_features=100|n_features=100 map_sigma=8" columns=variant,image_AUROC'
    )
    rows = published.render(spec).splitlines()
    assert sorted(row.split("|")[1].strip() for row in rows[2:] if row.startswith("| n_features")) == [
        "n_features=100",
        "n_features=100 map_sigma=8",
    ]


def test_a_missing_csv_or_column_is_a_clear_error() -> None:
    with pytest.raises(published.PublishedError, match="does not exist"):
        published.render("benchmarks/results/nowhere.csv")
    with pytest.raises(published.PublishedError, match="column 'nope'"):
        published.render("benchmarks/results/latest/results.csv columns=method,nope")


def test_a_hand_edited_number_is_detected(tmp_path: Path) -> None:
    spec = "benchmarks/results/latest/results.csv category=mean columns=method,image_AUROC"
    good = f"<!-- published: {spec} -->\n{published.render(spec)}<!-- /published -->\n"
    assert published.render_markdown(good) == good
    edited = good.replace("| 0.", "| 1.", 1)
    assert published.render_markdown(edited) != edited


def test_included_readme_links_point_to_docs_pages_or_become_paths() -> None:
    source = ROOT / "src" / "anomalib_repair" / "models" / "cras" / "README.md"
    text = "[multi](../../../../docs/multiclass.md) [cfg](../../../../configs/cras/mvtec_single.yaml) [w](https://x.y)"
    rewritten = hooks._rewrite_links(text, source, Path("models/cras.md"))
    assert "[multi](../multiclass.md)" in rewritten
    assert "cfg (`configs/cras/mvtec_single.yaml`)" in rewritten
    assert "[w](https://x.y)" in rewritten


def test_the_rendered_command_does_not_depend_on_the_recording_machine() -> None:
    recorded = "/work/venv/dev/bin/python /work/main/benchmarks/compare.py --quick"
    elsewhere = "/check/clone/.venv/bin/python3 /check/clone/benchmarks/compare.py --quick"
    assert published.display_command(recorded) == "python benchmarks/compare.py --quick"
    assert published.display_command(elsewhere) == published.display_command(recorded)
    assert published.display_command("benchmarks/cras_scaling.py --output x") == "benchmarks/cras_scaling.py --output x"
