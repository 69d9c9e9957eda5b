"""Decoded training images in memory: the same items bit for bit, files read once, bad combinations refused."""

from __future__ import annotations

import pytest
import torch

from anomalib_repair import MVTecFolder
from anomalib_repair.data.image_cache import DecodedImageCache
from anomalib_repair.errors import BadInputError


class CountingDataset:
    """Wraps a dataset and counts the reads of each item."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.reads = 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        return self.dataset[index]


def _datamodule(root, **kwargs):
    datamodule = MVTecFolder(root=root, num_workers=0, train_batch_size=4, **kwargs)
    datamodule.setup()
    return datamodule


def test_cached_items_equal_items_read_from_disk_and_files_are_read_once(demo_root):
    train = _datamodule(demo_root).train_data
    counting = CountingDataset(train)
    cache = DecodedImageCache(counting)
    for _ in range(3):  # three "epochs"
        for index in range(len(cache)):
            item, direct = cache[index], train[index]
            assert item.image.dtype == torch.float32
            assert torch.equal(item.image, direct.image)
            assert item.image_path == direct.image_path
    assert counting.reads == len(train)
    assert cache.cached_items == len(train)
    assert cache._items[0][1].dtype == torch.uint8
    assert DecodedImageCache(train).samples is train.samples  # everything else is the dataset's


def test_float_images_that_are_not_8_bit_are_kept_exactly():
    class FloatItems:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            from anomalib.data import ImageItem
            from torchvision.tv_tensors import Image

            return ImageItem(image=Image(torch.full((3, 4, 4), 0.123456)), image_path="x.png")

    cache = DecodedImageCache(FloatItems())
    assert torch.equal(cache[0].image, cache[0].image)
    assert torch.equal(cache[0].image, torch.full((3, 4, 4), 0.123456))


def test_datamodule_training_loader_reads_through_one_cache(demo_root):
    datamodule = _datamodule(demo_root, cache_images=True)
    batches = [batch.image for batch in datamodule.train_dataloader()]
    read = datamodule.train_dataloader().dataset  # CheckedItems (decode errors named) over the cache
    assert isinstance(read.dataset, DecodedImageCache)
    assert read.dataset is datamodule.train_dataloader().dataset.dataset
    assert datamodule._image_cache.cached_items == len(datamodule.train_data)
    plain = _datamodule(demo_root)
    expected = [batch.image for batch in plain.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(batches, expected, strict=True))


def test_cache_with_augmentations_or_workers_is_one_clear_error(demo_root):
    from torchvision.transforms import v2

    with pytest.raises(BadInputError, match="augmentations would change"):
        MVTecFolder(root=demo_root, cache_images=True, num_workers=0, train_augmentations=v2.RandomHorizontalFlip())
    with pytest.raises(BadInputError, match="set num_workers=0"):
        MVTecFolder(root=demo_root, cache_images=True, num_workers=2)
