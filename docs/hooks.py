"""mkdocs hooks: pages that include a repository file, and published numbers rendered from recorded CSVs.

- ``<!-- include: PATH -->`` on a page is replaced by the file at ``PATH`` (relative to the repository root), with
  its relative links rewritten: to the docs page that shows the target when there is one, otherwise to the
  target's path as code (the site has no copy of source files). The model READMEs stay the single source.
- ``<!-- published: CSV … -->`` blocks are rendered from their CSV by ``benchmarks/published.py``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->")
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
# Repository files shown as a docs page (so links to them become links to the page).
PAGES = {
    "README.md": "getting-started.md",
    "src/anomalib_repair/models/cras/README.md": "models/cras.md",
    "src/anomalib_repair/models/crr/README.md": "models/crr.md",
    "src/anomalib_repair/models/mfrnet/README.md": "models/mfrnet.md",
    "benchmarks/README.md": "benchmarks.md",
}


def _published() -> Any:
    spec = importlib.util.spec_from_file_location("published", ROOT / "benchmarks" / "published.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rewrite_links(text: str, source: Path, page: Path) -> str:
    def replace(match: re.Match[str]) -> str:
        target = match.group("target")
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        path_part, _, anchor = target.partition("#")
        resolved = (source.parent / path_part).resolve()
        try:
            relative = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            return match.group("text")
        shown = PAGES.get(relative)
        if shown is None and relative.startswith("docs/") and relative.endswith(".md"):
            shown = relative.removeprefix("docs/")
        if shown is None:
            return f"{match.group('text')} (`{relative}`)"
        link = Path(os.path.relpath(shown, Path(page).parent)).as_posix()
        return f"[{match.group('text')}]({link}{'#' + anchor if anchor else ''})"

    return LINK.sub(replace, text)


def _include(match: re.Match[str], page: str) -> str:
    source = ROOT / match.group("path")
    return _rewrite_links(source.read_text(), source, Path(page))


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Expand includes, then render published tables from their CSVs."""
    markdown = INCLUDE.sub(lambda match: _include(match, page.file.src_uri), markdown)
    return _published().render_markdown(markdown)


# Pictures of recorded runs shown on the site (served from their run folder, never copied into docs/).
ASSETS = {
    "assets/benchmark-chart.png": ROOT / "benchmarks" / "results" / "latest" / "chart.png",
    "assets/budget-curves.png": ROOT / "benchmarks" / "results" / "budget_curves" / "chart.png",
}


def on_files(files: Any, config: Any, **_: Any) -> Any:
    """Add the recorded benchmark chart to the site."""
    from mkdocs.structure.files import File

    for uri, source in ASSETS.items():
        if source.exists():
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
