"""Every model records its constructor arguments, so a checkpoint rebuilds the same model."""

from __future__ import annotations

import pytest

from tiny_models import TINY_MODELS


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_constructor_arguments_are_saved_as_hyperparameters(name: str) -> None:
    model = TINY_MODELS[name]()
    assert model.hparams["backbone"] == "tf_efficientnet_lite0.pypi"
    assert model.hparams["image_size"] == 64
    rebuilt = type(model)(**model.hparams)
    assert rebuilt.hparams == model.hparams
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
