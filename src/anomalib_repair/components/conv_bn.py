"""Convolution + BatchNorm pairs run as one convolution in evaluation.

In eval mode a ``BatchNorm2d`` after a convolution is an affine map per output channel, ``y = s·(conv(x) − μ) + β``
with ``s = γ / √(σ² + ε)``, so it folds into the convolution: weight ``s·W``, bias ``s·(b − μ) + β``. Running a
``Conv2d, BatchNorm2d[, ReLU]`` sequence that way skips one full pass over every activation map. The folded
weights are computed from the modules' current parameters at each call (a few kilobytes to megabytes, negligible
beside the convolution), so nothing is cached and the state dict is unchanged. The result equals the module-by-module
computation to float rounding (tested). In training mode, for BatchNorm without running statistics, and while a
model is being exported (the runtimes fold BatchNorm themselves, and the graph keeps its modules), the modules run
as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_repair.components.tracing import is_exporting


def folded_conv_bn(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the one convolution that equals ``norm(conv(x))`` with ``norm``'s running statistics."""
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    shift = (bias - norm.running_mean) * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return conv.weight * scale.view(-1, 1, 1, 1), shift


def run_sequential(layers: nn.Sequential, inputs: torch.Tensor) -> torch.Tensor:
    """``layers(inputs)``, with each ``Conv2d`` followed by an eval-mode ``BatchNorm2d`` run as one convolution."""
    if is_exporting():
        return layers(inputs)
    modules = list(layers)
    x = inputs
    index = 0
    while index < len(modules):
        module = modules[index]
        following = modules[index + 1] if index + 1 < len(modules) else None
        if (
            isinstance(module, nn.Conv2d)
            and isinstance(following, nn.BatchNorm2d)
            and not following.training
            and following.track_running_stats
            and following.running_mean is not None
            and module.padding_mode == "zeros"
        ):
            weight, bias = folded_conv_bn(module, following)
            x = F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)
            index += 2
            continue
        x = module(x)
        index += 1
    return x
