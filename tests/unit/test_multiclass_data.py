"""MultiClassDataModule and its named subclasses on the demo dataset, the real data and missing data."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import AnomalibDataModule
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Resize

from anomalib_repair.data import MPDD, CategoryIndex, MVTec, MVTecFolder, batch_category_indices, category_index_for
from anomalib_repair.errors import AnomalibRepairError, DatasetNotFoundError, UnknownCategoryError

DEMO_CATEGORIES = ["capsule", "disc", "grain", "weave"]
DEMO_TRAIN, DEMO_TEST_GOOD, DEMO_TEST_DEFECT, DEMO_DEFECT_TYPES = 8, 4, 2, 3
MVTEC_CATEGORIES = [
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
]  # fmt: skip
REAL_TRAIN = {"hazelnut_toy": 28, "magnetic_tile": 793}
REAL_TEST = {"hazelnut_toy": 6 + 17, "magnetic_tile": 159 + 115 + 85 + 57 + 32 + 103}


def category_of(path: str | Path, root: Path) -> str:
    """The category folder an image path lies in."""
    return Path(path).resolve().relative_to(root.resolve()).parts[0]


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message
    assert "\n" not in message, message
    assert isinstance(error.value, AnomalibRepairError)
    return message


# ---------------------------------------------------------------------------------------------- demo data
@pytest.fixture(scope="module")
def demo_datamodule(demo_root) -> MVTecFolder:
    datamodule = MVTecFolder(root=demo_root, num_workers=0, train_batch_size=4, eval_batch_size=4)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def test_is_an_anomalib_datamodule(demo_datamodule):
    assert isinstance(demo_datamodule, AnomalibDataModule)
    assert demo_datamodule.name == "MVTecFolder"


def test_categories_are_discovered_sorted(demo_datamodule):
    assert demo_datamodule.categories == DEMO_CATEGORIES
    assert demo_datamodule.known_categories == DEMO_CATEGORIES
    assert demo_datamodule.category == "all"
    assert demo_datamodule.category_index.names == DEMO_CATEGORIES


def test_sizes_are_sums_over_categories(demo_datamodule):
    assert len(demo_datamodule.train_data) == len(DEMO_CATEGORIES) * DEMO_TRAIN
    per_category_test = DEMO_TEST_GOOD + DEMO_DEFECT_TYPES * DEMO_TEST_DEFECT
    assert len(demo_datamodule.test_data) == len(DEMO_CATEGORIES) * per_category_test
    train_categories = [category_of(p, demo_datamodule.root) for p in demo_datamodule.train_data.samples.image_path]
    assert {name: train_categories.count(name) for name in DEMO_CATEGORIES} == dict.fromkeys(DEMO_CATEGORIES, 8)


def test_category_index_maps_every_sample_path(demo_datamodule, demo_root):
    index = demo_datamodule.category_index
    assert category_index_for(demo_datamodule) is index
    for dataset in (demo_datamodule.train_data, demo_datamodule.test_data):
        paths = list(dataset.samples.image_path)
        assert index.names_of(paths) == [category_of(path, demo_root) for path in paths]
        assert (index.lookup(paths) >= 0).all()


def test_train_batch_carries_its_categories(demo_datamodule, demo_root):
    batch = next(iter(demo_datamodule.train_dataloader()))
    assert batch.image.shape == (4, 3, 64, 64)
    assert batch.image.dtype == torch.float32
    indices = batch_category_indices(batch, demo_datamodule.category_index)
    assert indices.shape == (4,)
    assert ((indices >= 0) & (indices < len(DEMO_CATEGORIES))).all()
    expected = [DEMO_CATEGORIES.index(category_of(path, demo_root)) for path in batch.image_path]
    assert indices.tolist() == expected


def test_test_batch_has_masks_and_labels(demo_datamodule):
    batch = next(iter(demo_datamodule.test_dataloader()))
    assert batch.image.shape == (4, 3, 64, 64)
    assert batch.gt_mask.shape == (4, 64, 64)
    assert batch.gt_label.shape == (4,)
    labels = torch.tensor([0 if "/good/" in path else 1 for path in batch.image_path])
    assert batch.gt_label.int().tolist() == labels.tolist()


def test_categories_can_be_narrowed(demo_root):
    datamodule = MVTecFolder(root=demo_root, categories=["disc", "weave"], num_workers=0)
    assert datamodule.category == "disc+weave"
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.categories == ["disc", "weave"]
    assert datamodule.category_index.names == ["disc", "weave"]
    assert len(datamodule.train_data) == 2 * DEMO_TRAIN
    for dataset in (datamodule.train_data, datamodule.test_data):
        assert {category_of(p, demo_root) for p in dataset.samples.image_path} == {"disc", "weave"}


def test_single_category_string(demo_root):
    datamodule = MVTecFolder(root=demo_root, categories="grain", num_workers=0)
    assert datamodule.categories == ["grain"]
    assert datamodule.category == "grain"


def test_unknown_folder_category(demo_root):
    datamodule = MVTecFolder(root=demo_root, categories=["disc", "nope"])
    with pytest.raises(UnknownCategoryError) as error:
        datamodule.prepare_data()
    message = assert_one_line(error)
    assert "nope" in message
    assert all(name in message for name in DEMO_CATEGORIES)


# ---------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_datamodule(real_data_root) -> MVTecFolder:
    datamodule = MVTecFolder(root=real_data_root, num_workers=0, train_batch_size=4, eval_batch_size=4)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


@pytest.mark.real_data
def test_real_data_counts(real_datamodule, real_data_root):
    assert real_datamodule.categories == ["hazelnut_toy", "magnetic_tile"]
    assert len(real_datamodule.train_data) == sum(REAL_TRAIN.values())
    assert len(real_datamodule.test_data) == sum(REAL_TEST.values())
    for dataset, expected in ((real_datamodule.train_data, REAL_TRAIN), (real_datamodule.test_data, REAL_TEST)):
        names = real_datamodule.category_index.names_of(dataset.samples.image_path)
        assert {name: names.count(name) for name in expected} == expected
        assert names == [category_of(p, real_data_root) for p in dataset.samples.image_path]


@pytest.mark.real_data
def test_real_grayscale_images_load_as_rgb(real_datamodule):
    samples = real_datamodule.train_data.samples
    position = next(i for i, path in enumerate(samples.image_path) if "magnetic_tile" in path)
    item = real_datamodule.train_data[position]
    assert item.image.ndim == 3
    assert item.image.shape[0] == 3
    assert torch.equal(item.image[0], item.image[1])
    assert torch.equal(item.image[1], item.image[2])


def _mixed_size_items(datamodule: MVTecFolder) -> list:
    """A hazelnut_toy test item (512x512) and magnetic_tile test items of other sizes, anomalous ones included."""
    paths = list(datamodule.test_data.samples.image_path)
    hazelnut = next(i for i, p in enumerate(paths) if "hazelnut_toy" in p and "/colour/" in p)
    tiles = [i for i, p in enumerate(paths) if "magnetic_tile" in p and "/good/" not in p][:3]
    items = [datamodule.test_data[i] for i in (hazelnut, *tiles)]
    assert len({tuple(item.image.shape) for item in items}) > 1, "expected images of different sizes"
    return items


@pytest.mark.real_data
def test_real_mixed_sizes_collate_to_the_largest(real_datamodule):
    # Without any pre-processing, anomalib's collate resizes every image and mask of a heterogeneous batch to the
    # (H, W) of the image with the largest side, which distorts images of other aspect ratios.
    items = _mixed_size_items(real_datamodule)
    shapes = [tuple(item.image.shape[-2:]) for item in items]
    largest = max(shapes, key=max)
    batch = real_datamodule.test_data.collate_fn(items)
    assert batch.image.shape == (len(items), 3, *largest)
    assert batch.gt_mask.shape == (len(items), *largest)
    assert set(batch.gt_mask.unique().tolist()) <= {0, 1}  # masks are resized with nearest neighbours
    assert batch.gt_mask.flatten(1).any(dim=1).all()


@pytest.mark.real_data
def test_real_mixed_sizes_through_pre_processor(real_datamodule):
    items = _mixed_size_items(real_datamodule)
    batch = real_datamodule.test_data.collate_fn(items)
    pre_processor = PreProcessor(transform=Resize((64, 64)))
    pre_processor.on_test_batch_start(None, None, batch, 0)
    assert batch.image.shape == (len(items), 3, 64, 64)
    assert batch.gt_mask.shape == (len(items), 64, 64)


@pytest.mark.real_data
def test_real_model_resize_is_applied_before_collation(real_data_root):
    # What a Trainer does: the model's pre-processor Resize is appended to the datasets' augmentations at setup.
    datamodule = MVTecFolder(root=real_data_root, num_workers=0, train_batch_size=8, eval_batch_size=8)
    model = SimpleNamespace(pre_processor=PreProcessor(transform=Resize((64, 64))))
    datamodule.trainer = SimpleNamespace(model=model)
    datamodule.setup()
    for dataset in (datamodule.train_data, datamodule.test_data):
        shapes = {tuple(dataset[i].image.shape) for i in (0, len(dataset) - 1)}
        assert shapes == {(3, 64, 64)}
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (8, 3, 64, 64)
    assert batch.gt_mask.shape == (8, 64, 64)


# ---------------------------------------------------------------------------------------------- named datasets
def test_mvtec_unknown_category_fails_at_construction(tmp_path):
    with pytest.raises(UnknownCategoryError) as error:
        MVTec(root=tmp_path, categories=["bottle", "bottel"])
    message = assert_one_line(error)
    assert "bottel" in message
    assert all(name in message for name in MVTEC_CATEGORIES)


def test_mvtec_all_categories(tmp_path):
    datamodule = MVTec(root=tmp_path)
    assert datamodule.categories == MVTEC_CATEGORIES
    assert datamodule.category == "all"
    assert MVTec(root=tmp_path, categories=list(reversed(MVTEC_CATEGORIES))).category == "all"
    assert MVTec(root=tmp_path, categories=["pill", "screw"]).category == "pill+screw"


@pytest.fixture
def no_network(monkeypatch):
    """Make every host name unresolvable, as on a machine without network (no test may start a real download)."""

    def unreachable(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network disabled by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)


def test_mvtec_missing_root_fails_fast_offline(tmp_path, no_network):
    root = tmp_path / "missing"
    datamodule = MVTec(root=root, categories=["bottle"])
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as error:
        datamodule.prepare_data()  # anomalib tries to download MVTec AD, which fails without a network
    elapsed = time.monotonic() - start
    assert elapsed < 20, f"a failed download took {elapsed:.1f} s"
    message = assert_one_line(error)
    assert str(root) in message
    assert "bottle" in message
    assert "--data.root" in message
    assert "mvtec.com" in message


def test_folder_missing_root(tmp_path):
    root = tmp_path / "missing"
    for action in ("prepare_data", "setup"):
        with pytest.raises(DatasetNotFoundError) as error:
            getattr(MVTecFolder(root=root), action)()
        message = assert_one_line(error)
        assert str(root) in message
        assert "train/good" in message


def test_folder_without_categories(tmp_path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(DatasetNotFoundError) as error:
        MVTecFolder(root=tmp_path).prepare_data()
    message = assert_one_line(error)
    assert "No categories found" in message


def test_category_with_empty_train_good(tmp_path, demo_root):
    root = tmp_path / "data"
    for name in ("disc", "weave"):
        shutil.copytree(demo_root / name, root / name)
    for image in (root / "disc" / "train" / "good").iterdir():
        image.unlink()
    datamodule = MVTecFolder(root=root, num_workers=0)
    datamodule.prepare_data()
    with pytest.raises(DatasetNotFoundError) as error:
        datamodule.setup()
    message = assert_one_line(error)
    assert "'disc'" in message
    assert "no training images" in message
    assert str(root) in message


def test_mpdd_missing_root(tmp_path):
    root = tmp_path / "missing"
    with pytest.raises(DatasetNotFoundError) as error:
        MPDD(root=root).prepare_data()
    message = assert_one_line(error)
    assert str(root) in message
    assert "MPDD" in message
    assert "--data.root" in message


def test_category_index_for_anomalib_datamodules():
    assert category_index_for(SimpleNamespace(category="bottle")).names == ["bottle"]
    assert category_index_for(SimpleNamespace(name="Folder")).names == ["Folder"]
    assert category_index_for(None).names == ["all"]
    index = CategoryIndex(["a", "b"], {"/x/a.png": "a"})
    assert category_index_for(SimpleNamespace(category_index=index, category="a+b")) is index
