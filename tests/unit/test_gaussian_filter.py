"""The matrix Gaussian filter against anomalib's convolution (the path it replaced) and torch's reflect padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.models.components import GaussianBlur2d

from anomalib_repair.components.anomaly_map import AnomalyMapGenerator
from anomalib_repair.components.gaussian_filter import MatrixGaussianBlur2d, MatrixGaussianFilter, reflect_filter_matrix
from anomalib_repair.models.mfrnet.loss import HybridLoss


@pytest.mark.parametrize(("kernel", "sigma"), [(33, 4.0), (5, 4.0), (9, 1.0)])
@pytest.mark.parametrize("size", [(128, 128), (96, 160), (40, 40), (256, 256)])
def test_matrix_blur_equals_anomalib_gaussian_blur(kernel, sigma, size):
    generator = torch.Generator().manual_seed(0)
    maps = 20 * torch.randn(3, 1, *size, generator=generator)
    old = GaussianBlur2d(kernel_size=(kernel, kernel), sigma=(sigma, sigma), channels=1)
    new = MatrixGaussianBlur2d(kernel_size=(kernel, kernel), sigma=(sigma, sigma), channels=1)
    torch.testing.assert_close(new(maps), old(maps), atol=1e-4, rtol=1e-5)
    assert new.state_dict().keys() == old.state_dict().keys()  # checkpoints of either load into the other
    new.load_state_dict(old.state_dict())


def test_reflect_matrix_is_correlation_of_the_reflect_padded_axis():
    generator = torch.Generator().manual_seed(1)
    kernel = torch.rand(7, generator=generator, dtype=torch.float64)
    signal = torch.randn(2, 1, 11, generator=generator, dtype=torch.float64)
    padded = F.pad(signal, (3, 3), mode="reflect")
    expected = F.conv1d(padded, kernel.view(1, 1, -1))
    torch.testing.assert_close(signal @ reflect_filter_matrix(kernel.tolist(), 11).T, expected)


def test_filter_keeps_any_leading_axes_and_follows_dtype_and_device_moves():
    filt = MatrixGaussianFilter(torch.tensor([0.25, 0.5, 0.25]))
    maps = torch.rand(2, 5, 3, 8, 6)
    out = filt(maps)
    assert out.shape == maps.shape
    torch.testing.assert_close(out.sum(), maps.sum(), rtol=0.05, atol=0)  # a smoothing keeps the mass roughly
    double = filt.double()(maps.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), out)


def test_anomaly_map_generator_output_is_unchanged_by_the_matrix_blur():
    scores = 10 * torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    generator = AnomalyMapGenerator(sigma=4.0)
    old = GaussianBlur2d(kernel_size=(33, 33), sigma=(4.0, 4.0), channels=1)
    expected = old(F.interpolate(scores, size=(128, 128), mode="bilinear", align_corners=False))
    torch.testing.assert_close(generator(scores, (128, 128)), expected, atol=1e-4, rtol=1e-5)


def test_matrices_built_under_inference_mode_serve_a_later_training_step():
    """Validation runs under inference_mode; the training step after it needs gradients through the same filter."""
    filt = MatrixGaussianFilter(torch.tensor([0.25, 0.5, 0.25]))
    with torch.inference_mode():
        filt(torch.rand(1, 2, 6, 6))
    maps = torch.rand(1, 2, 6, 6, requires_grad=True)
    filt(maps).sum().backward()
    assert maps.grad is not None


def test_a_filter_traced_first_exports_its_matrices_as_constants(tmp_path):
    """Exported before any eager call, the graph holds the same matrices (and the module keeps no traced tensor)."""
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    blur = MatrixGaussianBlur2d(kernel_size=(11, 11), sigma=(1.5, 1.5), channels=1).eval()
    maps = torch.rand(2, 1, 16, 16)
    path = tmp_path / "blur.onnx"
    torch.onnx.export(blur, (maps,), str(path), input_names=["maps"], dynamo=True)
    assert not blur.filter._matrices
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    (exported,) = compiled([maps.numpy()]).values()
    old = GaussianBlur2d(kernel_size=(11, 11), sigma=(1.5, 1.5), channels=1)
    torch.testing.assert_close(torch.from_numpy(exported), old(maps), atol=1e-5, rtol=1e-5)


def test_blur_and_ssim_window_built_on_the_meta_device_keep_their_taps():
    # Models are built on the meta device to count parameters; the taps must still be the real kernel's.
    reference = MatrixGaussianBlur2d(sigma=(4.0, 4.0), channels=1)
    with torch.device("meta"):
        blur = MatrixGaussianBlur2d(sigma=(4.0, 4.0), channels=1)
        loss = HybridLoss()
    assert blur.kernel.is_meta
    assert blur.filter.kernel_y == pytest.approx(reference.filter.kernel_y)
    assert sum(loss.window.kernel_y) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="meta"):
        MatrixGaussianFilter(torch.ones(3, device="meta"))
