"""Every shipped YAML under configs/ names real classes and real options, and builds its model and datamodule.

The configs are the papers' recipes (GPU jobs) and the reduced CPU recipes; a renamed option would otherwise only
surface when a user starts a long run. Building a model with a config's arguments never downloads (weights are
resolved in ``setup``), so every config is checked here, network refused.
"""

from __future__ import annotations

import importlib
import inspect
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch import Trainer

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*/*.yaml"))
ENGINE_ONLY_KEYS = {"default_root_dir"}  # anomalib's Engine options that also appear under `trainer:`


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _accepted(cls: type) -> set[str]:
    """Constructor options of ``cls``, following ``**kwargs`` into the base classes as jsonargparse does."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters
        accepted |= {name for name, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return accepted - {"self"}


def _check_arguments(cls: type, arguments: dict[str, Any], where: str) -> None:
    accepted = _accepted(cls)
    unknown = set(arguments) - accepted
    assert not unknown, f"{where}: {cls.__name__} has no option(s) {sorted(unknown)}"


def test_there_are_configs_for_every_model() -> None:
    folders = {path.parent.name for path in CONFIGS}
    assert folders == {"cras", "crr", "mfrnet"}
    for folder in folders:
        assert (Path(CONFIGS[0]).parents[1] / folder / "cpu_reduced.yaml").exists()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_config_builds_its_model_and_datamodule(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        msg = f"network access while building {path}"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    config = yaml.safe_load(path.read_text())
    assert set(config) <= {"seed_everything", "model", "data", "trainer"}, sorted(config)

    model_class = _class(config["model"]["class_path"])
    assert model_class.__module__.startswith("anomalib_repair"), model_class
    model_arguments = config["model"].get("init_args", {})
    _check_arguments(model_class, model_arguments, str(path))
    model = model_class(**model_arguments)
    for key, value in model_arguments.items():
        stored = model.hparams.get(key)
        pairs = []
        if isinstance(value, dict) and isinstance(stored, dict):  # an option group (CRR's stage1, …): its options
            pairs = [(f"{key}.{option}", item, stored.get(option)) for option, item in value.items()]
        elif key in model.hparams and not isinstance(value, dict):
            pairs = [(key, value, stored)]
        for name, item, kept in pairs:
            same = kept == item or (isinstance(item, list) and list(kept) == item)
            assert same, f"{path}: {name} is kept as {kept!r}, the config says {item!r}"

    data_class = _class(config["data"]["class_path"])
    data_arguments = config["data"].get("init_args", {})
    _check_arguments(data_class, data_arguments, str(path))
    data_class(**data_arguments)  # construction only: no folder is read

    trainer_arguments = set(config.get("trainer", {})) - ENGINE_ONLY_KEYS
    unknown = trainer_arguments - set(inspect.signature(Trainer.__init__).parameters)
    assert not unknown, f"{path}: unknown trainer option(s) {sorted(unknown)}"
    assert not ({"max_steps", "max_epochs"} & set(model.trainer_arguments)), "models never set the training length"
