"""Published numbers come from recorded CSVs: render the marked tables of the READMEs and docs pages.

A Markdown file marks a table with an opening and a closing comment::

    <!-- published: benchmarks/results/latest/results.csv category=mean columns=method,image_AUROC,pixel_AUROC -->
    (generated table; never edit by hand)
    <!-- /published -->

Options after the CSV path (relative to the repository root): ``key=value`` filters on CSV columns (``a|b`` for
several values), ``columns=`` picks and orders the columns. The rendered block is the table plus a line naming
the recorded run and the command that produced it (from ``results.json`` beside the CSV, when present).

    python benchmarks/published.py          # rewrite every marked block from its CSV
    python benchmarks/published.py --check  # exit 1 if a marked block differs from its CSV (the test suite runs this)

The docs site renders the same blocks while it builds (``docs/hooks.py``), so a page can never show a number that
is not in a recorded CSV.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- published: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /published -->)", re.DOTALL)
# Files whose marked blocks are kept in sync (the docs pages are rendered at build time as well).
MARKDOWN_GLOBS = ("README.md", "docs/**/*.md", "src/anomalib_repair/models/*/README.md", "benchmarks/README.md")
LABELS = {
    "method": "method",
    "image_size": "px",
    "category": "category",
    "image_AUROC": "I-AUROC",
    "image_AP": "I-AP",
    "image_F1Max": "I-F1max",
    "pixel_AUROC": "P-AUROC",
    "pixel_AP": "P-AP",
    "pixel_F1Max": "P-F1max",
    "pixel_AUPRO": "AUPRO",
    "train_s": "train s",
    "ms_per_image_b1": "ms/img b1",
    "ms_per_image_b32": "ms/img b32",
    "images_per_s_b32": "img/s b32",
    "x_backbone_b1": "× backbone b1",
    "x_backbone_b32": "× backbone b32",
    "floor_ms_per_image_b1": "floor ms b1",
    "floor_ms_per_image_b32": "floor ms b32",
    "peak_rss_train_mb": "peak RSS fit MB",
    "peak_rss_mb": "peak RSS fit+test MB",
    "ms_per_image_b32_run1": "ms/img b32, run 1",
    "ms_per_image_b32_run2": "ms/img b32, run 2",
    "ms_per_image_b32_spread_pct": "ms/img b32 spread %",
    "x_backbone_b32_run1": "× backbone b32, run 1",
    "x_backbone_b32_run2": "× backbone b32, run 2",
    "x_backbone_b32_spread": "× backbone b32 spread",
    "image_AUROC_spread": "I-AUROC spread",
    "pixel_AUROC_spread": "P-AUROC spread",
    "pixel_AUPRO_spread": "AUPRO spread",
    "image_AUROC_sd": "I-AUROC s.d.",
    "pixel_AUROC_sd": "P-AUROC s.d.",
    "pixel_AUPRO_sd": "AUPRO s.d.",
    "train_min": "train min",
    "score_mode": "score",
    "image_score": "image score",
    "image_cache": "decoded images kept",
    "batch": "batch",
    "ms_per_image": "ms/img",
    "backbone_ms_per_image": "backbone ms/img",
    "x_backbone": "× backbone",
    "x_backbone_flops": "× backbone FLOPs",
    "gflops": "GFLOP/img",
    "backbone_gflops": "backbone GFLOP/img",
    "max_abs_score": "max |Δ score|",
    "max_abs_map": "max |Δ map|",
    "labels_equal": "labels equal",
    "rss_built_mb": "RSS after build MB",
    "forward_mb": "forward adds MB",
    "above_target": "above 1.5×",
    "ms_per_image_dense": "dense ms/img",
    "ms_per_image_banded": "banded ms/img",
    "x_backbone_dense": "dense × backbone",
    "x_backbone_banded": "banded × backbone",
    "speed_ratio": "dense / banded",
    "aggregate_full_ms_per_image": "full kernels: aggregation ms/img",
    "aggregate_blocks_ms_per_image": "blocks: aggregation ms/img",
    "aggregate_speed_ratio": "aggregation full / blocks",
    "forward_speed_ratio": "forward full / blocks",
    "x_backbone_full": "full × backbone",
    "x_backbone_blocks": "blocks × backbone",
}
# Where one column name means something else in one recorded file: (file name, column) -> header.
FILE_LABELS = {
    ("memory.csv", "peak_rss_mb"): "peak RSS MB",
}


class PublishedError(ValueError):
    """A marked block names a missing CSV, an unknown column or matches no row."""


def _parse_spec(spec: str) -> tuple[Path, dict[str, set[str]], list[str] | None]:
    parts = shlex.split(spec)  # a quoted value may hold spaces: variant="recipe|n_features=100 map_sigma=8"
    if not parts:
        msg = "empty `published:` marker: give a CSV path"
        raise PublishedError(msg)
    path = ROOT / parts[0]
    filters: dict[str, set[str]] = {}
    columns: list[str] | None = None
    for option in parts[1:]:
        key, _, value = option.partition("=")
        if key == "columns":
            columns = value.split(",")
        else:
            filters[key] = set(value.split("|"))
    return path, filters, columns


def _cell(value: str, column: str) -> str:
    """Metrics (``image_*``, ``pixel_*``, spreads, ratios) and numbers below 1 to 3 decimals; ``x_*`` to 2, ``max_abs*``
    in scientific notation; ``*_pct`` and other numbers to 1 decimal, whole above 100; text as is."""
    try:
        number = float(value)
    except ValueError:
        return value
    metric = column.startswith(("image_", "pixel_", "seed_spread_", "ddp_diff_")) and column != "image_size"
    fixed = {"max_abs": ".1e", "x_": ".2f"}  # differences near float rounding; ratios
    if metric or column.endswith("ratio"):
        return f"{number:.3f}"
    if column.startswith(tuple(fixed)):
        return format(number, next(spec for prefix, spec in fixed.items() if column.startswith(prefix)))
    if number.is_integer() and "." not in value:
        return value
    if abs(number) < 1 and not column.endswith("_pct"):
        return f"{number:.3f}"
    return f"{number:.0f}" if abs(number) >= 100 else f"{number:.1f}"


def _source_line(path: Path) -> str:
    run = path.parent
    line = f"Recorded run: `{run.relative_to(ROOT)}/{path.name}`"
    meta = run / "results.json"
    if meta.exists():
        recorded = json.loads(meta.read_text())
        environment = recorded.get("environment") or recorded.get("meta") or {}
        command = environment.get("command")
        if command:
            line += f", produced by `{display_command(command)}`"
        if environment.get("date"):
            line += f" on {str(environment['date'])[:10]}"
    return line + "."


def display_command(command: str) -> str:
    """``command`` as a reader would type it: the interpreter as ``python``, paths relative to the repository.

    The recorded command holds the recording machine's absolute paths; the rendering must not depend on them
    (a clean clone elsewhere renders the same table).
    """
    words = shlex.split(command)
    if words and Path(words[0]).name.startswith("python"):
        words[0] = "python"
    return " ".join(_relative_to_repository(word) for word in words)


def _relative_to_repository(word: str) -> str:
    parts = Path(word).parts
    if Path(word).is_absolute():
        for anchor in ("benchmarks", "src", "configs", "docs", "tests"):
            if anchor in parts:
                return str(Path(*parts[parts.index(anchor) :]))
    return word


def render(spec: str) -> str:
    """The Markdown table (and its source line) for one marker's ``spec``."""
    path, filters, columns = _parse_spec(spec)
    if not path.exists():
        msg = f"published: {path.relative_to(ROOT)} does not exist (run the benchmark that records it)"
        raise PublishedError(msg)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = list(rows[0]) if rows else []
    for key in [*filters, *(columns or [])]:
        if key not in header:
            msg = f"published: column '{key}' not in {path.relative_to(ROOT)} (columns: {', '.join(header)})"
            raise PublishedError(msg)
    selected = [row for row in rows if all(row[key] in values for key, values in filters.items())]
    if not selected:
        msg = f"published: no row of {path.relative_to(ROOT)} matches {filters}"
        raise PublishedError(msg)
    shown = columns or header
    lines = [
        "| " + " | ".join(FILE_LABELS.get((path.name, column), LABELS.get(column, column)) for column in shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row[column], column) for column in shown) + " |" for row in selected]
    return "\n".join(lines) + "\n\n" + _source_line(path) + "\n"


def render_markdown(text: str) -> str:
    """``text`` with every marked block replaced by its rendering."""
    return BLOCK.sub(lambda match: match.group(1) + render(match.group("spec")) + match.group(4), text)


def markdown_files() -> list[Path]:
    """Every Markdown file that may hold marked blocks."""
    files: set[Path] = set()
    for pattern in MARKDOWN_GLOBS:
        files.update(ROOT.glob(pattern))
    return sorted(files)


def stale_files() -> list[Path]:
    """Files whose marked blocks differ from their CSVs."""
    stale = []
    for path in markdown_files():
        text = path.read_text()
        if BLOCK.search(text) and render_markdown(text) != text:
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Rewrite (default) or check the marked blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block differs from its CSV")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale published numbers: {path.relative_to(ROOT)} (run `python benchmarks/published.py`)")
        return 1 if stale else 0
    failed = 0
    for path in markdown_files():
        text = path.read_text()
        try:
            rendered = render_markdown(text)
        except PublishedError as error:
            print(f"{path.relative_to(ROOT)}: {error}")
            failed += 1
            continue
        if rendered != text:
            path.write_text(rendered)
            print(f"updated {path.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
