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


def test_images_already_at_the_size_are_not_resized_as_torchvision_does() -> None:
    images = torch.rand(1, 3, 64, 83)
    assert antialias_resize(images, (64, 83)) is images
    crop = exportable_transform(Compose([Resize(64, antialias=True), CenterCrop((56, 56))]))
    cropped = crop(images)  # a view: columns 14-69 (27 / 2 = 13.5 rounds half to even, as torchvision's crop)
    assert cropped.untyped_storage().data_ptr() == images.untyped_storage().data_ptr()
    torch.testing.assert_close(cropped, CenterCrop((56, 56))(images), atol=0, rtol=0)
    torch.testing.assert_close(cropped, images[..., 4:60, 14:70], atol=0, rtol=0)
    # integer images come out as floats, as from the matrix path, whether or not they are resized
    pixels = torch.randint(0, 256, (1, 3, 64, 83), dtype=torch.uint8)
    assert antialias_resize(pixels, (64, 83)).dtype == antialias_resize(pixels, (32, 40)).dtype == torch.float32


class _PreProcessedConv(torch.nn.Module):
    """The exported pre-processing (resize then the backbone's per-channel Normalize) feeding a convolution."""

    def __init__(self, crop_size: int | None, resize_mode: str) -> None:
        super().__init__()
        self.transform = build_pre_processor("tf_efficientnet_lite0.pypi", 64, crop_size, resize_mode).export_transform
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(self.transform(images))


@pytest.mark.parametrize(("height", "width", "crop_size", "mode"), [
    (96, 80, None, "square"), (64, 64, None, "square"), (90, 120, 56, "shorter_side"), (64, 64, 56, "shorter_side"),
])  # fmt: skip
def test_an_export_at_a_fixed_input_size_compiles_in_openvino_and_matches_torch(
    tmp_path, height: int, width: int, crop_size: int | None, mode: str
) -> None:
    """``to_openvino(input_size=...)`` makes the resize matrices constants; OpenVINO 2026.4 refused such a graph when
    the constant was the right operand (a fully connected layer with the Normalize fused in: 'data.size() == OC')."""
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = _PreProcessedConv(crop_size, mode).eval()
    path = tmp_path / "pre.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        module, (torch.rand(1, 3, height, width),), str(path), input_names=["images"], dynamo=True,
        dynamic_shapes={"images": {0: batch}},
    )  # fmt: skip
    compiled = openvino.Core().compile_model(
        openvino.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    images = torch.rand(3, 3, height, width)
    transform = build_pre_processor("tf_efficientnet_lite0.pypi", 64, crop_size, mode).transform
    with torch.no_grad():
        expected = module.conv(transform(images))
    result = torch.from_numpy(next(iter(compiled([images.numpy()]).values())))
    torch.testing.assert_close(result, expected, atol=1e-4, rtol=1e-4)


def test_a_model_exported_to_openvino_at_a_fixed_input_size_compiles(tmp_path) -> None:
    """What ``anomalib export --input_size`` and ``benchmarks/export_latency.py`` do, end to end (CRAS, 64 px)."""
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    from anomalib_repair import CRAS

    model = CRAS(backbone="tf_efficientnet_lite0.pypi", layers=["blocks.2", "blocks.4"], image_size=64,
                 crop_size=64, embed_dim=16, visualizer=False).eval()  # fmt: skip
    with torch.no_grad():  # one category's centres, as a fit leaves them
        model.model.set_centers(model.model.adaptor(model.model.patch_features(torch.rand(1, 3, 64, 64))))
    path = model.to_openvino(tmp_path, input_size=(64, 64))
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    images = torch.rand(2, 3, 64, 64)
    outputs = {key.any_name: value for key, value in compiled([images.numpy()]).items()}
    with torch.no_grad():
        expected = model.model(model.pre_processor(images))
    torch.testing.assert_close(torch.from_numpy(outputs["anomaly_map"]).reshape(expected.anomaly_map.shape),
                               model.post_processor(expected).anomaly_map, atol=1e-4, rtol=0)  # fmt: skip
