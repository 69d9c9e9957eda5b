"""The recipes ship inside the package and are found by name."""

from __future__ import annotations

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
