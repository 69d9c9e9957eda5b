"""Tests for the embedded synthetic demo dataset (``anomalib_repair.demo.dataset``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from anomalib.data.datasets import MVTecADDataset
from PIL import Image

from anomalib_repair.demo import samples as demo
from anomalib_repair.demo.dataset import DEFECT_TYPES, DEMO_CATEGORIES, generate_demo_dataset, main
from anomalib_repair.demo.scenes import _RENDERERS

NUM_TRAIN = 24
NUM_TEST_GOOD = 8
NUM_TEST_DEFECT = 4
IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def full_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate every category once with the default parameters; return the dataset root."""
    root = tmp_path_factory.mktemp("demo_full")
    assert generate_demo_dataset(root) == root
    return root


def _files(root: Path, categories: tuple[str, ...] | list[str]) -> dict[str, bytes]:
    """Read every PNG below the given categories, keyed by the path relative to ``root``."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for category in categories
        for path in sorted((root / category).rglob("*.png"))
    }


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_public_constants() -> None:
    assert DEMO_CATEGORIES == ("weave", "grain", "disc", "capsule")
    assert DEFECT_TYPES == ("scratch", "hole", "stain")


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_layout_loads_with_anomalib(full_dataset: Path, category: str) -> None:
    root = full_dataset
    train = MVTecADDataset(root=root, category=category, split="train")
    assert len(train) == NUM_TRAIN
    assert set(train.samples.label) == {"good"}
    assert (train.samples.label_index == 0).all()

    test = MVTecADDataset(root=root, category=category, split="test")
    assert len(test) == NUM_TEST_GOOD + NUM_TEST_DEFECT * len(DEFECT_TYPES)
    counts = test.samples.label.value_counts().to_dict()
    assert counts == {"good": NUM_TEST_GOOD, **dict.fromkeys(DEFECT_TYPES, NUM_TEST_DEFECT)}

    abnormal = test.samples[test.samples.label_index == 1]
    assert len(abnormal) == NUM_TEST_DEFECT * len(DEFECT_TYPES)
    for image_path, mask_path in zip(abnormal.image_path, abnormal.mask_path, strict=True):
        assert mask_path is not None
        assert Path(mask_path).is_file()
        assert Path(mask_path).name == f"{Path(image_path).stem}_mask.png"
        assert Path(mask_path).parent.name == Path(image_path).parent.name
    assert test.samples[test.samples.label_index == 0].mask_path.isna().all()

    # Anomalib itself can read a defective sample with its mask.
    item = test[len(test) - 1]
    assert tuple(item.image.shape) == (3, IMAGE_SIZE, IMAGE_SIZE)
    assert tuple(item.gt_mask.shape) == (IMAGE_SIZE, IMAGE_SIZE)
    assert bool(item.gt_label)
    assert int(item.gt_mask.sum()) > 0


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_images_and_masks(full_dataset: Path, category: str) -> None:
    root = full_dataset
    area = IMAGE_SIZE * IMAGE_SIZE
    for path in sorted((root / category).glob("*/*/*.png")):
        if path.parts[-3] == "ground_truth":
            continue
        with Image.open(path) as image:
            assert image.mode == "RGB"
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    for defect in DEFECT_TYPES:
        for image_path in sorted((root / category / "test" / defect).glob("*.png")):
            mask_path = root / category / "ground_truth" / defect / f"{image_path.stem}_mask.png"
            with Image.open(mask_path) as mask_image:
                assert mask_image.mode == "L"
                mask = np.asarray(mask_image)
            assert mask.shape == _load(image_path).shape[:2]
            assert mask.dtype == np.uint8
            assert set(np.unique(mask).tolist()) <= {0, 255}
            fraction = float((mask > 0).sum()) / area
            assert 0.003 <= fraction <= 0.05, f"{mask_path}: mask covers {fraction:.4f} of the image"


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
def test_defects_are_detectable(full_dataset: Path, category: str) -> None:
    """A defect stands out against the average good image more inside its mask than elsewhere."""
    root = full_dataset
    goods = sorted((root / category / "train" / "good").glob("*.png"))
    mean_good = np.mean([_load(path).astype(np.float32) for path in goods], axis=0)
    for defect in DEFECT_TYPES:
        for image_path in sorted((root / category / "test" / defect).glob("*.png")):
            image = _load(image_path).astype(np.float32)
            mask = _load(root / category / "ground_truth" / defect / f"{image_path.stem}_mask.png") > 0
            difference = np.abs(image - mean_good).mean(axis=-1)
            inside, outside = float(difference[mask].mean()), float(difference[~mask].mean())
            assert inside > 1.2 * outside, f"{image_path}: inside {inside:.1f} vs outside {outside:.1f}"


@pytest.mark.parametrize("category", DEMO_CATEGORIES)
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_mask_is_exactly_the_changed_pixels(category: str, defect: str) -> None:
    """Masks mark exactly the pixels that differ from the defect-free rendering and lie on the allowed area."""
    size = 96
    for index in range(3):
        rng = demo._image_rng(5, DEMO_CATEGORIES.index(category), 2 + DEFECT_TYPES.index(defect), index)
        image, clean, mask = demo._render_defective(category, defect, rng, size)
        changed = np.any(image != clean, axis=-1)
        np.testing.assert_array_equal(mask > 0, changed)
        # Re-render the same scene to get the region on which defects are allowed.
        scene_rng = demo._image_rng(5, DEMO_CATEGORIES.index(category), 2 + DEFECT_TYPES.index(defect), index)
        allowed = _RENDERERS[category](scene_rng, size).allowed
        assert not (changed & ~allowed).any()
        border = np.ones((size, size), dtype=bool)
        border[1:-1, 1:-1] = False
        assert not (changed & border).any()


def test_same_seed_gives_identical_bytes(full_dataset: Path, tmp_path: Path) -> None:
    root = full_dataset
    again = generate_demo_dataset(tmp_path / "again")
    reference, repeated = _files(root, DEMO_CATEGORIES), _files(again, DEMO_CATEGORIES)
    per_category = NUM_TRAIN + NUM_TEST_GOOD + 2 * NUM_TEST_DEFECT * len(DEFECT_TYPES)
    assert len(reference) == len(DEMO_CATEGORIES) * per_category
    assert reference == repeated


def test_different_seed_gives_different_images(full_dataset: Path, tmp_path: Path) -> None:
    root = full_dataset
    other = generate_demo_dataset(
        tmp_path / "seed1", categories=["grain", "disc"], num_train=4, num_test_good=2, num_test_defect=1, seed=1
    )
    other_files = _files(other, ["grain", "disc"])
    assert other_files
    reference = _files(root, ["grain", "disc"])
    for relative, content in other_files.items():
        assert reference[relative] != content, relative


def test_subset_matches_full_generation(full_dataset: Path, tmp_path: Path) -> None:
    root = full_dataset
    subset = generate_demo_dataset(tmp_path / "subset", categories=["capsule", "weave"])
    assert sorted(path.name for path in subset.iterdir()) == ["capsule", "weave"]
    assert _files(subset, ["capsule", "weave"]) == _files(root, ["capsule", "weave"])


def test_unknown_category_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bottle") as error:
        generate_demo_dataset(tmp_path / "bad", categories=["disc", "bottle"])
    message = str(error.value)
    assert "\n" not in message
    assert all(category in message for category in DEMO_CATEGORIES)
    assert not (tmp_path / "bad").exists()


def test_invalid_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        generate_demo_dataset(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="seed"):
        generate_demo_dataset(tmp_path, seed=-1)


def test_marker_skip_and_regeneration(tmp_path: Path) -> None:
    kwargs = {"categories": ["disc"], "image_size": 48, "num_test_good": 1, "num_test_defect": 1}
    root = generate_demo_dataset(tmp_path, num_train=3, **kwargs)
    marker = root / "disc" / ".demo_complete"
    params = json.loads(marker.read_text())
    assert params["num_train"] == 3
    assert params["seed"] == 0
    assert params["image_size"] == 48

    # Complete and unchanged: nothing is rewritten.
    first = root / "disc" / "train" / "good" / "000.png"
    first.write_bytes(first.read_bytes())
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    generate_demo_dataset(tmp_path, num_train=3, **kwargs)
    assert first.stat().st_mtime_ns == stamp

    # Different parameters: regenerated, stale files removed.
    generate_demo_dataset(tmp_path, num_train=2, **kwargs)
    assert sorted(p.name for p in (root / "disc" / "train" / "good").iterdir()) == ["000.png", "001.png"]
    assert json.loads(marker.read_text())["num_train"] == 2

    # Incomplete: a missing file triggers regeneration.
    first.unlink()
    generate_demo_dataset(tmp_path, num_train=2, **kwargs)
    assert first.is_file()

    # overwrite=True always regenerates.
    generate_demo_dataset(tmp_path, num_train=2, overwrite=True, **kwargs)
    assert first.is_file()
    assert not (root / "disc" / ".demo_partial").exists()


def test_foreign_directory_is_not_deleted(tmp_path: Path) -> None:
    foreign = tmp_path / "capsule" / "train" / "good" / "real.png"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        generate_demo_dataset(tmp_path, categories=["capsule"])
    assert foreign.read_bytes() == b"not ours"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "--image-size", "32", "--seed", "3", "--categories", "disc,grain"]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["disc", "grain"]
    assert json.loads((tmp_path / "disc" / ".demo_complete").read_text())["seed"] == 3
    assert str(tmp_path) in capsys.readouterr().out

    assert main(["--root", str(tmp_path / "x"), "--categories", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
