"""The shipped training recipes (``configs/<model>/<recipe>.yaml``), found from an installed package.

The recipes travel inside the package (``anomalib_repair/configs``, the repository's ``configs/`` folder), so a
``pip install`` has them too::

    python -m anomalib_repair.recipes                      # list them
    anomalib train --config "$(python -m anomalib_repair.recipes cras/cpu_reduced)" --data.root ./my_folder
"""

from __future__ import annotations

import sys
from pathlib import Path

from anomalib_repair.errors import BadInputError

FOLDER = Path(__file__).resolve().parent / "configs"


def recipe_names() -> list[str]:
    """Every shipped recipe as ``<model>/<recipe>`` (e.g. ``cras/cpu_reduced``)."""
    return sorted(f"{path.parent.name}/{path.stem}" for path in FOLDER.glob("*/*.yaml"))


def recipe_path(name: str) -> Path:
    """The file of recipe ``name`` (``cras/cpu_reduced``, with or without ``.yaml``)."""
    path = FOLDER / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        msg = f"No recipe {name!r}: the shipped recipes are {', '.join(recipe_names())}."
        raise BadInputError(msg)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the path of the recipe named on the command line, or list every recipe."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("\n".join(recipe_names()))  # noqa: T201
        return 0
    try:
        print(recipe_path(args[0]))  # noqa: T201
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
