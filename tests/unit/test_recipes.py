"""The recipes ship inside the package and are found by name."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anomalib_repair.errors import BadInputError
from anomalib_repair.recipes import main, recipe_names, recipe_path

ROOT = Path(__file__).resolve().parents[2]


def test_every_repository_recipe_is_found_by_name():
    on_disk = sorted(f"{path.parent.name}/{path.stem}" for path in (ROOT / "configs").glob("*/*.yaml"))
    assert recipe_names() == on_disk
    assert "cras/cpu_reduced" in on_disk
    for name in on_disk:
        assert recipe_path(name).read_bytes() == (ROOT / "configs" / f"{name}.yaml").read_bytes()
    assert recipe_path("crr/cpu_reduced.yaml") == recipe_path("crr/cpu_reduced")


def test_an_unknown_recipe_is_one_line_naming_the_shipped_ones(capsys):
    with pytest.raises(BadInputError, match="cras/cpu_reduced"):
        recipe_path("cras/nope")
    assert main(["cras/nope"]) == 2
    assert "No recipe 'cras/nope'" in capsys.readouterr().err
    assert main(["mfrnet/cpu_reduced"]) == 0
    assert capsys.readouterr().out.strip().endswith("mfrnet/cpu_reduced.yaml")


def test_the_recipe_lookup_process_loads_neither_torch_nor_anomalib():
    """``"$(python -m anomalib_repair.recipes NAME)"`` in a shell line costs milliseconds, not an anomalib import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "anomalib_repair.recipes", "crr/cpu_reduced"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(recipe_path("crr/cpu_reduced"))
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "anomalib_repair.errors" in imported  # what the recipes module itself needs
    assert not imported & {"torch", "anomalib", "lightning", "timm"}, sorted(imported & {"torch", "anomalib"})


def test_the_package_names_resolve_the_same_when_loaded_lazily():
    """In the recipe-lookup process the public names come from the package's ``__getattr__``: the same classes."""
    import anomalib_repair

    for name in anomalib_repair.__all__:
        if name != "__version__":
            assert anomalib_repair.__getattr__(name) is getattr(anomalib_repair, name), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        anomalib_repair.__getattr__("Nope")


@pytest.mark.slow
def test_the_built_wheel_carries_the_recipes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next(tmp_path.glob("anomalib_repair-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in recipe_names():
        assert f"anomalib_repair/configs/{name}.yaml" in names, name
