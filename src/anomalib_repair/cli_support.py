"""What the package changes in anomalib's CLI process, and only there: one place, applied once per process.

Importing :mod:`anomalib_repair` (which anomalib's CLI does while it parses ``--model anomalib_repair.CRAS``) calls
:func:`prepare_cli_process`. When the running program is anomalib's command line (its ``main`` is the program's
entry point), it

- makes errors of this package (:class:`~anomalib_repair.errors.AnomalibRepairError`: a missing dataset, bad
  images, weights offline, …) print as one line instead of a traceback (``ANOMALIB_REPAIR_TRACEBACK=1`` shows the
  traceback again); any other error keeps its traceback;
- refuses, in one line, ``predict`` on a folder without images, a missing ``--ckpt_path`` and ``export``
  without one, before a model is built (:func:`check_cli_arguments`), and sends ``export`` without
  ``--export_root`` to the checkpoint's own run folder (:func:`export_root_for`);
- says in one line which ``--model.*`` arguments an ``export`` ignores because they contradict the checkpoint
  (anomalib exports the model the checkpoint describes: :func:`ignored_export_arguments`);
- makes ``--seed_everything N`` seed the run, which anomalib's CLI parses but never applies
  (:mod:`anomalib_repair.seeding`), by wrapping the CLI's ``before_instantiate_classes`` hook;
- turns the parser's multi-line refusal of CRR's flat option names of earlier releases (``--model.stage1_steps``,
  a recipe with ``stage1_steps:``) into one line naming the new grouped ones, and does the same for a group
  option set to ``null`` on the command line (:func:`~anomalib_repair.models.crr.options.parser_error_hint`),
  by wrapping jsonargparse's ``ArgumentParser.error``; every other parse error is printed as before.

In any other program (a script, a notebook, a test runner) nothing is changed: ``sys.excepthook`` stays the
program's own and nothing is seeded.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

from anomalib_repair.data.synthesis.anomaly_synthesis import IMAGE_SUFFIXES
from anomalib_repair.errors import BadInputError, install_excepthook
from anomalib_repair.seeding import apply_cli_seed

_PREPARED = False


def in_anomalib_cli() -> bool:
    """Whether this process is anomalib's command line (``anomalib train|test|…``)."""
    cli_module = sys.modules.get("anomalib.cli.cli")
    entry = getattr(sys.modules.get("__main__"), "main", None)
    return cli_module is not None and entry is not None and entry is getattr(cli_module, "main", None)


def export_root_for(checkpoint: Path) -> Path:
    """Default folder of ``anomalib export`` in this package: the run the checkpoint belongs to, not ``results/``.

    ``<run>/weights/lightning/model.ckpt`` (or ``<run>/weights/steps/last.ckpt``) exports to ``<run>`` (so the
    exported file lands in ``<run>/weights/<type>/``); a checkpoint anywhere else to ``<its folder>/<its
    name>_export``. Exports of different models and runs never overwrite each other.
    """
    if checkpoint.parent.parent.name == "weights" and checkpoint.parent.name in {"lightning", "steps"}:
        return checkpoint.parents[2]
    return checkpoint.parent / f"{checkpoint.stem}_export"


def _plain(value: Any) -> Any:
    """A value as plain data for comparison: dataclasses and jsonargparse namespaces as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if hasattr(value, "as_dict"):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def ignored_export_arguments(model_config: Any, checkpoint: Path) -> list[str]:
    """The ``--model.*`` values that ``export`` will not use: given, unlike the class's default and the checkpoint's.

    anomalib's export builds the model from the checkpoint's saved arguments alone, so a value given on the command
    line (or in a ``--config``) that differs from what the checkpoint was trained with is dropped; each is named as
    ``--model.NAME VALUE (checkpoint: SAVED)`` (option groups by their options, ``--model.stage1.steps``).
    """
    import torch

    from anomalib_repair.models.base import COMPONENTS

    class_path = str(_plain(model_config.get("class_path", "")) if hasattr(model_config, "get") else "")
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        return []
    model_class = getattr(importlib.import_module(module_name), class_name, None)
    if model_class is None:
        return []
    given = _plain(model_config.get("init_args") or {})
    parameters = inspect.signature(model_class).parameters
    defaults = {name: _plain(p.default) for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    # mmap: only the saved arguments are read here; the weights stay on disk for the export's own load
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True).get("hyper_parameters", {})
    upgrade = getattr(model_class, "upgrade_saved_arguments", None)
    saved = _plain(upgrade(dict(saved)) if upgrade is not None else dict(saved))
    ignored: list[str] = []
    for name, value in given.items():
        if name in COMPONENTS or name not in saved:
            continue
        default, kept = defaults.get(name), saved[name]
        if isinstance(value, dict) and isinstance(kept, dict):
            group_default = default if isinstance(default, dict) else {}
            ignored += [
                f"--model.{name}.{option} {item} (checkpoint: {kept.get(option)})"
                for option, item in value.items()
                if item not in (group_default.get(option), kept.get(option))
            ]
        elif value not in (default, kept):
            ignored.append(f"--model.{name} {value} (checkpoint: {kept})")
    return ignored


def check_cli_arguments(cli: Any) -> None:
    """Refuse, before any model is built, what would fail later with a long traceback.

    ``predict`` on a folder or file without images, a ``--ckpt_path`` that does not exist, ``export`` without one.
    Also fills in ``export``'s ``--export_root`` when it is not given (:func:`export_root_for`).
    """
    subcommand = str(cli.config.get("subcommand"))
    section = cli.config.get(subcommand)
    if section is None or not hasattr(section, "get"):
        return
    ckpt_path = section.get("ckpt_path")
    if ckpt_path and not Path(str(ckpt_path)).is_file():
        msg = f"Checkpoint not found: {ckpt_path} (training prints its checkpoint path at the end: pass that file)."
        raise BadInputError(msg)
    if subcommand == "export" and not ckpt_path:
        msg = "export needs a trained model: pass --ckpt_path PATH_TO_CHECKPOINT (fit/train prints it)."
        raise BadInputError(msg)
    if subcommand == "export" and not section.get("export_root"):
        section["export_root"] = str(export_root_for(Path(str(ckpt_path))))
    if subcommand == "export" and section.get("model") is not None:
        ignored = ignored_export_arguments(section.get("model"), Path(str(ckpt_path)))
        if ignored:
            print(  # noqa: T201 - one line for the person at the command line
                "warning: export builds the model the checkpoint describes and ignores "
                f"{'; '.join(ignored)} (train again to change them).",
                file=sys.stderr,
            )
    data = section.get("data")
    if subcommand == "predict" and isinstance(data, str | Path):
        target = Path(data)
        images = [target] if target.is_file() else [p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not target.exists() or not images:
            msg = (
                f"No images to predict in {target} ({'not found' if not target.exists() else 'empty'}): pass an "
                f"image file or a folder holding {', '.join(IMAGE_SUFFIXES)} files."
            )
            raise BadInputError(msg)


def _one_line_parse_errors() -> None:
    """Print the parse errors that :func:`parser_error_hint` knows as its one line (exit code 2, as argparse's)."""
    from jsonargparse import ArgumentParser

    from anomalib_repair.models.crr.options import parser_error_hint

    original = ArgumentParser.error

    @functools.wraps(original)
    def error(self: Any, message: str, ex: Exception | None = None) -> Any:
        hint = parser_error_hint(str(message))
        if hint is None or not self.exit_on_error:
            return original(self, message if hint is None else hint, ex)
        sys.stderr.write(f"error: {hint}\n")
        return self.exit(2)

    ArgumentParser.error = error  # type: ignore[method-assign]


def prepare_cli_process() -> bool:
    """Apply the CLI-only behaviour once if this process is anomalib's CLI; returns whether it did."""
    global _PREPARED  # noqa: PLW0603 - once per process by design
    if _PREPARED or not in_anomalib_cli():
        return False
    _PREPARED = True
    install_excepthook()
    _one_line_parse_errors()
    cli_class = sys.modules["anomalib.cli.cli"].AnomalibCLI
    original = cli_class.before_instantiate_classes

    @functools.wraps(original)
    def before_instantiate_classes(self: Any) -> None:
        original(self)
        check_cli_arguments(self)
        apply_cli_seed(self)

    cli_class.before_instantiate_classes = before_instantiate_classes
    return True
