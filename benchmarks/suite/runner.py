"""The parent process: one worker subprocess per method, then the outputs; :func:`main` dispatches the CLI.

:func:`run_parent` runs the backbone worker and every method's worker (:func:`run_child`, each a fresh
``benchmarks/compare.py --worker`` interpreter), then :func:`write_outputs` writes ``results.csv``,
``results.json``, ``results.md`` and ``chart.png``. With several roots, :func:`run_roots` runs one complete
benchmark per root and combines them; ``--render`` (:func:`render`) re-writes an earlier run's outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .chart import write_chart
from .notes import notes
from .report import combine_roots, markdown_report, recipe_line, result_rows, write_csv
from .settings import (
    BACKBONE_TASK,
    REPO_ROOT,
    SHARED_DATA_ENV,
    TIMM_BACKBONE,
    WORKER_TIMEOUT_S,
    Settings,
    parse_args,
    root_categories,
    settings_from_args,
    shared_data_dir,
)
from .worker import run_worker

ENTRY_POINT = Path(__file__).resolve().parents[1] / "compare.py"  # what every worker and per-root run executes


def environment(argv: list[str]) -> dict[str, Any]:
    """Versions, CPU, threads, date, load and the exact command."""
    import anomalib
    import timm
    import torch

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "anomalib": anomalib.__version__,
        "timm": timm.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "processor": platform.processor() or platform.machine(),
        **cpu_identity(),
        "git_commit": git_commit(),
    }


def cpu_identity() -> dict[str, str | None]:
    """The CPU's model name and the instruction set torch dispatches to (``AVX512``, ``AVX2``, ...).

    Trained methods whose training amplifies rounding differences (STFPM, GLASS) give different results on hosts with
    different vector units, so a recorded run names both.
    """
    import torch

    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return {"cpu_model": model or platform.processor() or None, "cpu_capability": capability}


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The checked-out commit of ``root``, with ``+changes`` when tracked files differ from it; None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+changes" if status.stdout.strip() else "")


@functools.cache
def hub_cache() -> Path:
    """A private Hugging Face cache holding the packaged Lite0 weights, so anomalib's ``pre_trained=True`` works."""
    import tempfile

    from anomalib_repair.weights.hub_cache import seed_hub_cache

    if str(REPO_ROOT / "src") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "src"))
    folder = Path(tempfile.mkdtemp(prefix="benchmark-hub-"))
    seed_hub_cache(TIMM_BACKBONE, folder)
    return folder


def run_child(task: str, settings_path: Path, output: Path) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; return its JSON, or an error record with the reason."""
    result_path = output / "raw" / f"{task}.json"
    log_path = output / "logs" / f"{task}.log"
    command = [sys.executable, str(ENTRY_POINT), "--worker", task]
    command += ["--settings", str(settings_path), "--result", str(result_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache()), "PYTHONWARNINGS": "ignore"}
    source = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = source + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else source
    start = time.perf_counter()
    try:
        with log_path.open("w") as log:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=WORKER_TIMEOUT_S, check=False
            )
        returncode: int | str = completed.returncode
    except subprocess.TimeoutExpired:
        returncode = f"timeout after {WORKER_TIMEOUT_S} s"
    wall = time.perf_counter() - start
    if returncode == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        result["worker_wall_s"] = wall
        return result
    tail = log_path.read_text().strip().splitlines()[-15:] if log_path.exists() else []
    reason = next((line for line in reversed(tail) if "Error" in line or "error" in line), tail[-1] if tail else "")
    return {"method": task, "error": f"exit {returncode}: {reason}", "log": str(log_path), "worker_wall_s": wall}


def add_backbone_ratios(results: dict[str, dict[str, Any]], floor: dict[str, Any]) -> None:
    """Ratios to the backbone-alone worker, for results recorded before the floor was timed beside each method."""
    for result in results.values():
        if "x_backbone_b1" in result:
            continue  # timed in turn with the backbone in the method's own worker
        for batch in (1, 32):
            for suffix in ("", "_min"):
                key = f"ms_per_image_b{batch}{suffix}"
                if key in result and key in floor:
                    result[f"x_backbone_b{batch}{suffix}"] = result[key] / floor[key]


def resolve_output(args: argparse.Namespace) -> Path:
    """``--output`` or ``benchmarks/results/<timestamp>``."""
    if args.output is not None:
        return args.output.resolve()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return REPO_ROOT / "benchmarks" / "results" / stamp


def copy_to_latest(output: Path) -> None:
    """Mirror the four result files into ``benchmarks/results/latest/`` (runs written elsewhere are left out)."""
    latest = REPO_ROOT / "benchmarks" / "results" / "latest"
    if latest.resolve() == output or output.parent != latest.parent.resolve():
        return  # only default runs (benchmarks/results/<timestamp>) replace the published one
    latest.mkdir(parents=True, exist_ok=True)
    for name in ("results.csv", "results.md", "results.json", "chart.png"):
        if (output / name).exists():
            shutil.copy2(output / name, latest / name)


def child_argv(argv: list[str], root: Path, output: Path) -> list[str]:
    """``argv`` (without the program) for one root: every option kept except ``--root`` and ``--output``."""
    kept: list[str] = []
    skipping = False
    for token in argv:
        if token.startswith("--"):
            skipping = token in ("--root", "--output")
            if token.startswith(("--root=", "--output=")):
                continue
        if not skipping:
            kept.append(token)
    return [*kept, "--root", str(root), "--output", str(output)]


def run_roots(args: argparse.Namespace, argv: list[str], roots: list[Path]) -> int:
    """One full run per root (each in its own subfolder), then the combined ``results.csv``/``results.md``."""
    output = resolve_output(args)
    output.mkdir(parents=True, exist_ok=True)
    runs: dict[str, Path] = {}
    for root in roots:
        name = root.name if root.name not in runs else f"{root.parent.name}_{root.name}"
        runs[name] = output / name
        command = [sys.executable, str(ENTRY_POINT), *child_argv(argv[1:], root, runs[name])]
        print(f"Benchmark root {root} -> {runs[name]}", flush=True)
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            print(f"root {root}: the run failed (exit {done.returncode}); see {runs[name]}", flush=True)
    finished = {name: folder for name, folder in runs.items() if (folder / "results.csv").exists()}
    combine_roots(output, finished)
    print((output / "results.md").read_text())
    return 0 if len(finished) == len(runs) else 1


def run_parent(args: argparse.Namespace, argv: list[str]) -> int:
    """Run every method in its own subprocess, then write the tables and the chart."""
    roots = [path.expanduser().resolve() for path in (args.root or [shared_data_dir() / "real"])]
    if len(roots) > 1:
        return run_roots(args, argv, roots)
    root = roots[0]
    wanted = args.categories or root_categories(root)
    missing = [c for c in wanted if not (root / c / "train").is_dir()]
    if not root.is_dir() or missing or not wanted:
        detail = f"no {', '.join(missing) or 'category folders'} under it" if root.is_dir() else "not found"
        print(f"SKIPPED: benchmark data root {root}: {detail} (set --root or ${SHARED_DATA_ENV}).")
        return 0
    started = time.perf_counter()
    settings = settings_from_args(args, root)
    output = resolve_output(args)
    for folder in (output, output / "raw", output / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    settings_path = output / "settings.json"
    settings_path.write_text(json.dumps(dataclasses.asdict(settings), indent=2))
    env = environment(argv)
    print(f"Benchmark -> {output}\n{env['command']}", flush=True)
    floor = run_child(BACKBONE_TASK, settings_path, output)
    results: dict[str, dict[str, Any]] = {}
    for method in settings.methods:
        print(f"[{time.perf_counter() - started:7.0f} s] {method} ...", flush=True)
        results[method] = run_child(method, settings_path, output)
        print(f"[{time.perf_counter() - started:7.0f} s] {method}: {_summary(results[method])}", flush=True)
    add_backbone_ratios(results, floor)
    report = {
        "environment": env,
        "settings": dataclasses.asdict(settings),
        "backbone": floor,
        "results": results,
        "wall_s": time.perf_counter() - started,
    }
    write_outputs(output, report, publish=args.output is None)
    print((output / "results.md").read_text())
    return 0


def write_outputs(output: Path, report: dict[str, Any], publish: bool) -> None:
    """Write results.csv, results.json, results.md and chart.png from a report; ``publish``: copy to ``latest/``."""
    settings = Settings(**report["settings"])
    rows = result_rows(report["results"], settings.categories)
    report["notes"] = notes(settings, report["results"])
    chart_error = write_chart(output / "chart.png", rows, report["backbone"], recipe_line(settings))
    if chart_error:
        report["notes"].append(chart_error)
    write_csv(output / "results.csv", rows)
    (output / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (output / "results.md").write_text(markdown_report(report, rows))
    if publish:
        copy_to_latest(output)


def render(folder: Path) -> int:
    """Re-write the tables and the chart of an earlier run from its ``results.json`` (nothing is re-run).

    The published copy (``latest/``) is refreshed when the folder is the run it was copied from.
    """
    report = json.loads((folder / "results.json").read_text())
    latest = REPO_ROOT / "benchmarks" / "results" / "latest" / "results.json"
    published = latest.exists() and json.loads(latest.read_text()).get("environment") == report.get("environment")
    write_outputs(folder.resolve(), report, publish=published)
    print((folder / "results.md").read_text())
    return 0


def _summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED {result['error']}"
    mean = result["metrics"]["mean"]
    return (
        f"I-AUROC {mean['image_AUROC']:.3f}, P-AUROC {mean['pixel_AUROC']:.3f}, AUPRO {mean['pixel_AUPRO']:.3f}, "
        f"train {result['train_s']:.0f} s, test {result['test_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> int:
    """Parent run, or a worker when ``--worker`` is given."""
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(argv[1:])
    if args.worker:
        return run_worker(args)
    if args.render:
        return render(args.render)
    return run_parent(args, argv)
