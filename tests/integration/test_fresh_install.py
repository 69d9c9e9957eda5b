"""A user's path from a wheel installed into a fresh virtual environment, outside the checkout, offline.

The wheel is built from this checkout and installed with ``--no-deps --no-index`` into a new venv whose only other
packages are this environment's (torch, anomalib, … reached through a ``.pth`` line, so the test does not download
or copy gigabytes). Every command then runs from a folder outside the repository with no ``PYTHONPATH``: the
package, its recipes and its models come from the installed wheel. The path is the README's: the recipe by name,
``anomalib train`` on an MVTec-layout folder of one's own, ``test`` and ``export`` with the checkpoint only, then
an OpenVINO inferencer on one image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANOMALIB_MAIN = "import sys; from anomalib.cli.cli import main; sys.argv[0] = 'anomalib'; sys.exit(main())"


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command[:4])} …\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_in_a_fresh_venv_trains_tests_exports_and_infers_offline(tmp_path, demo_root):
    pytest.importorskip("openvino")
    plain = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env = {**plain, "HF_HUB_OFFLINE": "1"}
    wheels = tmp_path / "wheels"  # building may fetch the build backend (as `pip wheel` does); installing is offline
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], tmp_path, plain)
    env["PIP_NO_INDEX"] = "1"
    wheel = next(wheels.glob("anomalib_repair-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
                      .stdout.strip())  # fmt: skip
    (fresh_site / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], tmp_path, env)

    user = tmp_path / "user"
    user.mkdir()
    where = _run([python, "-c", "import anomalib_repair; print(anomalib_repair.__file__)"], user, env).stdout
    assert Path(where.strip()).is_relative_to(fresh_site), f"imported from {where.strip()}, not the installed wheel"
    recipe = Path(_run([python, "-m", "anomalib_repair.recipes", "cras/cpu_reduced"], user, env).stdout.strip())
    assert recipe.is_relative_to(fresh_site) and recipe.exists(), recipe

    folder = user / "my_parts"
    for category in ("disc", "weave"):
        shutil.copytree(demo_root / category, folder / category)
    anomalib = [python, "-c", ANOMALIB_MAIN]
    quick = ["--trainer.max_epochs", "1", "--model.image_size", "64", "--model.crop_size", "64"]
    trained = _run([*anomalib, "train", "--config", str(recipe), "--data.root", str(folder), *quick], user, env)
    checkpoints = sorted(user.rglob("model.ckpt"))
    assert checkpoints, trained.stdout[-2000:]
    checkpoint = checkpoints[0]
    assert str(checkpoint) in trained.stdout, "train prints the checkpoint path"

    data = ["--data", "anomalib_repair.MVTecFolder", "--data.root", str(folder), "--data.num_workers", "0"]
    tested = _run(
        [*anomalib, "test", "--model", "anomalib_repair.CRAS", *data, "--ckpt_path", str(checkpoint)], user, env
    )
    assert "image_AUROC" in tested.stdout + tested.stderr
    exported = _run(
        [*anomalib, "export", "--model", "anomalib_repair.CRAS", "--export_type", "openvino",
         "--ckpt_path", str(checkpoint)],
        user, env,
    )  # fmt: skip
    model_xml = next(user.rglob("weights/openvino/*.xml"))
    assert f"Exported model: {model_xml}" in exported.stdout

    image = next((folder / "disc" / "test").glob("*/*.png"))
    infer = (
        "import sys; from anomalib.deploy import OpenVINOInferencer; "
        "result = OpenVINOInferencer(path=sys.argv[1], device='CPU').predict(sys.argv[2]); "
        "print(float(result.pred_score.reshape(-1)[0]), int(result.pred_label.reshape(-1)[0]))"
    )
    score, label = _run([python, "-c", infer, str(model_xml), str(image)], user, env).stdout.split()[-2:]
    assert 0.0 <= float(score) <= 1.0 and label in {"0", "1"}
