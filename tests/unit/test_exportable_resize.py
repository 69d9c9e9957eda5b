"""The exportable antialiased resize equals torchvision's, for any input size, and replaces anomalib's in exports."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import CenterCrop, Compose, Normalize, Resize
from torchvision.transforms.v2.functional import resize

from anomalib_repair.components.exportable_resize import (
    ExportableAntialiasResize,
    ExportableAntialiasResizeCrop,
    antialias_resize,
    exportable_transform,
)
from anomalib_repair.models.base import RepairPreProcessor, build_pre_processor


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(512, 512, (128, 128)), (220, 400, (128, 128)), (100, 630, (128, 128)), (64, 90, (128, 128)),
     (128, 128, (128, 128)), (333, 517, (288, 200))],
)  # fmt: skip
def test_it_equals_torchvisions_antialiased_resize(height: int, width: int, size: tuple[int, int]) -> None:
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height))
    expected = resize(images, list(size), antialias=True)
    torch.testing.assert_close(antialias_resize(images, size), expected, atol=1e-5, rtol=0)


def test_the_export_transform_keeps_the_antialiasing_that_anomalib_drops() -> None:
    transform = Compose([Resize((64, 64), antialias=True), CenterCrop((56, 56)), Normalize([0.5] * 3, [0.5] * 3)])
    exported = exportable_transform(transform)
    assert isinstance(exported, Compose) and isinstance(exported.transforms[0], ExportableAntialiasResize)
    images = torch.rand(1, 3, 150, 97)
    torch.testing.assert_close(exported(images), transform(images), atol=1e-5, rtol=0)
    # an aspect-keeping resize without a crop and a non-antialiased resize are exported as anomalib exports them
    assert isinstance(exportable_transform(Resize(64, antialias=True)), Resize)
    assert not isinstance(exportable_transform(Resize((64, 64), antialias=False)), ExportableAntialiasResize)


def test_our_pre_processor_exports_it_and_keeps_it_after_a_checkpoint_restore() -> None:
    pre_processor = build_pre_processor("tf_efficientnet_lite0.pypi", 64, 64)
    assert isinstance(pre_processor, RepairPreProcessor)
    assert isinstance(pre_processor.export_transform.transforms[0], ExportableAntialiasResize)
    pre_processor.load_checkpoint_config(pre_processor.checkpoint_config())
    assert isinstance(pre_processor.export_transform.transforms[0], ExportableAntialiasResize)


@pytest.mark.parametrize(("height", "width"), [(300, 520), (520, 300), (93, 157), (64, 64), (65, 64), (200, 133)])
def test_shorter_side_resize_then_center_crop_equals_torchvision(height: int, width: int) -> None:
    transform = Compose([Resize(64, antialias=True), CenterCrop((56, 56))])
    exported = exportable_transform(transform)
    assert isinstance(exported, Compose) and isinstance(exported.transforms[0], ExportableAntialiasResizeCrop)
    images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(width))
    torch.testing.assert_close(exported(images), transform(images), atol=1e-5, rtol=0)
