"""``anomalib export`` names, in one line, the ``--model.*`` values it ignores because the checkpoint says otherwise."""

from __future__ import annotations

import torch
from jsonargparse import Namespace

from anomalib_repair.cli_support import ignored_export_arguments
from tiny_models import tiny_cras, tiny_crr


def _checkpoint(model, tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": {}}, path)
    return path


def _config(class_path: str, **init_args) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_values_that_contradict_the_checkpoint_are_named(tmp_path) -> None:
    checkpoint = _checkpoint(tiny_cras(noise_std=0.3), tmp_path)
    given = _config("anomalib_repair.CRAS", noise_std=0.5, embed_dim=1536, backbone="tf_efficientnet_lite0.pypi")
    # noise_std contradicts the checkpoint; embed_dim is the class default (not given), the backbone agrees
    assert ignored_export_arguments(given, checkpoint) == ["--model.noise_std 0.5 (checkpoint: 0.3)"]


def test_defaults_and_agreeing_values_say_nothing(tmp_path) -> None:
    model = tiny_cras()
    checkpoint = _checkpoint(model, tmp_path)
    same = {key: value for key, value in model.hparams.items() if key in ("noise_std", "layers", "image_size")}
    assert ignored_export_arguments(_config("anomalib_repair.CRAS", **same), checkpoint) == []
    assert ignored_export_arguments(_config("anomalib_repair.CRAS"), checkpoint) == []


def test_option_groups_are_compared_option_by_option(tmp_path) -> None:
    checkpoint = _checkpoint(tiny_crr(), tmp_path)
    given = _config("anomalib_repair.CRR", stage1=Namespace(steps=99, warmup_steps=2))
    assert ignored_export_arguments(given, checkpoint) == ["--model.stage1.steps 99 (checkpoint: 6)"]
