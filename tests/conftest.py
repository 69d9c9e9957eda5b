"""Fixtures shared by every test: data locations, the synthetic demo dataset and an offline model hub."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_ENV = "ANOMALIB_REPAIR_SHARED_DATA"


@pytest.fixture(scope="session", autouse=True)
def _offline_hub() -> Iterator[None]:
    """Keep every test away from the Hugging Face hub: only local caches and files may be used."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        # huggingface_hub reads the variable once, at import; a module imported earlier needs the constant too.
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            patch.setattr(constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The shared data folder: ``$ANOMALIB_REPAIR_SHARED_DATA``, else ``<repo>/../shared/data``."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured).expanduser()
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data_root(shared_data_root: Path) -> Path:
    """Real images in MVTec AD layout (categories ``hazelnut_toy`` and ``magnetic_tile``); skips without them."""
    real = shared_data_root / "real"
    if not real.is_dir():
        pytest.skip(f"../shared/data not found (looked for {real}; set {SHARED_DATA_ENV} to its location)")
    return real.resolve()  # anomalib resolves sample paths; a symlinked shared/ must compare equal


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in MVTec AD layout: weave, grain, disc, capsule at 64 px."""
    from anomalib_repair.demo.dataset import generate_demo_dataset

    return generate_demo_dataset(
        tmp_path_factory.mktemp("demo"),
        image_size=64,
        num_train=8,
        num_test_good=4,
        num_test_defect=2,
        seed=0,
    )
