"""Convolution + BatchNorm pairs folded into one convolution in evaluation: the same numbers, training untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from anomalib_repair.components import conv_bn
from anomalib_repair.components.conv_bn import run_sequential
from anomalib_repair.models.crr.torch_model import SegmentationNetwork


def _randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            width = layer.num_features
            layer.running_mean.copy_(torch.randn(width, generator=generator))
            layer.running_var.copy_(torch.rand(width, generator=generator) * 3 + 0.05)
            layer.weight.data.copy_(torch.randn(width, generator=generator))
            layer.bias.data.copy_(torch.randn(width, generator=generator))


@pytest.mark.parametrize("conv_bias", [True, False])
def test_folded_sequence_equals_the_modules_in_eval(conv_bias):
    generator = torch.Generator().manual_seed(0)
    layers = nn.Sequential(
        nn.Conv2d(5, 8, 3, padding=1, bias=conv_bias),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 4, 1),  # no BatchNorm after it: runs as it is
    )
    _randomise_batch_norms(layers, generator)
    layers.eval()
    inputs = torch.randn(3, 5, 12, 12, generator=generator)
    torch.testing.assert_close(run_sequential(layers, inputs), layers(inputs), rtol=1e-5, atol=1e-5)


def test_training_mode_runs_the_modules_and_updates_the_running_statistics():
    layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    twin.load_state_dict(layers.state_dict())
    inputs = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(run_sequential(layers.train(), inputs), twin.train()(inputs))
    torch.testing.assert_close(layers[1].running_mean, twin[1].running_mean)
    assert layers[1].running_mean.abs().sum() > 0  # the statistics moved


def test_export_runs_the_modules_as_they_are(monkeypatch):
    layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    calls = []
    layers[1].register_forward_hook(lambda *_: calls.append("bn"))
    run_sequential(layers, torch.randn(1, 3, 8, 8))
    assert calls == []  # folded: BatchNorm's own forward never ran
    monkeypatch.setattr(conv_bn, "is_exporting", lambda: True)
    run_sequential(layers, torch.randn(1, 3, 8, 8))
    assert calls == ["bn"]


def test_crr_segmentation_network_gives_the_module_by_module_logits(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    network = SegmentationNetwork(in_channels=32, base_width=8, output_size=32)
    _randomise_batch_norms(network, generator)
    network.eval()
    maps = torch.randn(2, 32, 4, 4, generator=generator)
    folded = network(maps, (32, 32))
    monkeypatch.setattr(conv_bn, "is_exporting", lambda: True)  # the modules one by one
    torch.testing.assert_close(folded, network(maps, (32, 32)), rtol=1e-4, atol=1e-4)
