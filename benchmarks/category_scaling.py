"""How training time and memory grow with the number of categories: one unified model vs one model per category.

For each of our models (reduced CPU recipe, ``configs/<model>/cpu_reduced.yaml``) and K = 1, 2, 4 categories of the
generated demo dataset (``anomalib_repair.demo.dataset``: 4 categories, 24 training images each, 128 px), trains
ONE unified model on the first K categories, and K separate single-category models; records the training wall time
and the peak memory (``ru_maxrss`` of each run's own subprocess). Epoch-based recipes get ``--epochs`` epochs (the
same number of passes over the data either way, so unified and per-category train on the same images); CRR keeps
a fixed step count (``--crr-steps``, 30 + 10 by default instead of its recipe's 100 + 40, to keep the run short), so
K separate CRR models take K times its steps.

    PYTHONPATH=src python benchmarks/category_scaling.py --output benchmarks/results/category_scaling

Writes ``results.csv`` (one row per model x K: unified and per-category time and memory, and their ratio) and
``results.json`` (command, date, load averages, every run).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"cras": "CRAS", "crr": "CRR", "mfrnet": "MFRNet"}
CATEGORIES = ("weave", "grain", "disc", "capsule")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "category_scaling")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--crr-steps", nargs=2, type=int, default=[30, 10], help="CRR stage I and II steps")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "ROOT", "CATEGORIES"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _worker(model_key: str, root: str, categories: str, epochs: int, crr_steps: list[int]) -> dict[str, Any]:
    import yaml
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything
    from suite.methods import with_textures

    import anomalib_repair

    recipe = yaml.safe_load((ROOT / "configs" / model_key / "cpu_reduced.yaml").read_text())
    init = dict(recipe["model"]["init_args"])
    with_textures(init, None)  # self-augmented sources: the run needs no folder beside the repository
    steps = None
    if model_key == "crr":  # fewer steps than the recipe's 100 + 40 (stated in the output)
        init["stage1"] = {**init["stage1"], "steps": crr_steps[0]}
        init["stage2"] = {**init["stage2"], "steps": crr_steps[1]}
        steps = sum(crr_steps)
    budget: dict[str, Any] = (
        {"max_epochs": -1, "max_steps": steps, "check_val_every_n_epoch": None, "val_check_interval": steps}
        if steps
        else {"max_epochs": epochs, "check_val_every_n_epoch": epochs}
    )
    seed_everything(0, workers=True)
    datamodule = anomalib_repair.MVTecFolder(
        root=root, categories=categories.split("+"), train_batch_size=16, eval_batch_size=32, num_workers=0
    )
    model = getattr(anomalib_repair, MODELS[model_key])(**init, visualizer=False)
    with tempfile.TemporaryDirectory() as work:
        engine = Engine(default_root_dir=work, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        **budget)  # fmt: skip
        start = time.perf_counter()
        engine.fit(model=model, datamodule=datamodule)
        fit_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"fit_s": fit_s, "peak_rss_mb": peak, "train_images": len(datamodule.train_data)}


def _run(model_key: str, root: Path, categories: list[str], args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--epochs", str(args.epochs), "--crr-steps", *map(str, args.crr_steps)]
    command += ["--worker", model_key, str(root), "+".join(categories)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(part for part in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if part)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        msg = f"{model_key} on {categories} failed: {done.stderr.strip().splitlines()[-1:]}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Parent: generate the data, run every (model, K) both ways, write the recorded run."""
    args = _parse(argv)
    if args.worker:
        model_key, root, categories = args.worker
        print(json.dumps(_worker(model_key, root, categories, args.epochs, args.crr_steps)))
        return 0
    from anomalib_repair.demo.dataset import generate_demo_dataset

    start = time.perf_counter()
    data = generate_demo_dataset(Path(tempfile.mkdtemp()) / "demo", categories=list(CATEGORIES), seed=0)
    single = {(key, name): _run(key, data, [name], args) for key in args.models for name in CATEGORIES[: max(args.ks)]}
    rows, runs = [], {"single": {f"{key}/{name}": value for (key, name), value in single.items()}, "unified": {}}
    for key in args.models:
        for k in args.ks:
            names = list(CATEGORIES[:k])
            unified = single[(key, names[0])] if k == 1 else _run(key, data, names, args)
            runs["unified"][f"{key}/K={k}"] = unified
            separate_s = sum(single[(key, name)]["fit_s"] for name in names)
            separate_mb = max(single[(key, name)]["peak_rss_mb"] for name in names)
            rows.append({
                "model": MODELS[key],
                "K": k,
                "train_images": unified["train_images"],
                "unified_fit_s": round(unified["fit_s"], 1),
                "per_category_fit_s": round(separate_s, 1),
                "time_ratio": round(unified["fit_s"] / separate_s, 3),
                "unified_peak_mb": round(unified["peak_rss_mb"]),
                "per_category_peak_mb": round(separate_mb),
                "models_to_keep": f"1 vs {k}",
            })  # fmt: skip
            print(rows[-1], flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    with (args.output / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    environment = {
        "command": " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_at_end": list(os.getloadavg()),
        "wall_s": time.perf_counter() - start,
    }
    (args.output / "results.json").write_text(json.dumps({"environment": environment, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
