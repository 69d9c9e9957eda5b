"""CRR network pieces: parameter counts, taps and groups, masking, CNN tokens, stage switch, losses, tracing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_repair import CRR
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.crr import CrrModel
from anomalib_repair.models.crr.loss import ReconstructRepairLoss, SegmentationFocalLoss
from anomalib_repair.models.crr.torch_model import TokenEncoder

LITE = {"backbone": "tf_efficientnet_lite0.pypi", "pre_trained": False}
SMALL_VIT = "vit_small_patch14_reg4_dinov2.lvd142m"  # same family as the default, 4x cheaper
SHALLOW = {"decoder_depth": 2}  # CRR's stage-I option group: a 2-block decoder


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_default_crr_has_the_papers_trainable_parameters_without_downloading():
    # The meta device skips the random initialisation (seconds for 200 M parameters on CPU); the code path is the
    # default one: the ViT is built with random weights and its pretrained ones are only resolved in `setup`.
    with torch.device("meta"):
        model = CRR()
    network = model.model
    assert network.encoder.backbone.pre_trained  # weights are resolved in `setup` (see the next test)
    assert network.encoder.backbone.layers == [f"blocks.{index}" for index in range(2, 10)]
    assert network.encoder.num_prefix_tokens == 5  # class token + 4 registers
    assert _count(network.encoder) == 0
    for counted, expected, exact in (
        (_count(network.bottleneck), 4.72e6, 4_722_432),
        (_count(network.decoder), 56.70e6, 56_702_976),
        (_count(network.segmentation), 70.44e6, 70_441_778),
    ):
        assert abs(counted - expected) / expected < 0.02, (counted, expected)  # MODELS.md, within 2 %
        assert counted == exact, (counted, exact)  # the exact counts the model README publishes
    convs = [m for m in network.segmentation.modules() if isinstance(m, nn.Conv2d)]
    widths = [(conv.in_channels, conv.out_channels) for conv in convs]
    assert widths == [
        (1536, 1536), (1536, 1536), (1536, 768),  # up1, db1
        (768, 768), (768, 768), (768, 384),  # up2, db2
        (384, 384), (384, 384), (384, 192),  # up3, db3
        (192, 192), (192, 192), (192, 48),  # up4, db4
        (48, 2),  # final
    ]  # fmt: skip
    assert len(network.decoder) == 8
    assert network.groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not network.bottleneck.eval_masking


def test_pretrained_vit_is_built_without_its_weights():
    model = CrrModel(backbone=SMALL_VIT, pre_trained=True, seg_size=None)  # offline: would fail if it downloaded
    assert not bool(model.encoder.backbone.weights_loaded)


def test_default_input_pipeline_is_448_resize_392_crop():
    with torch.device("meta"):
        transform = CRR().pre_processor.transform
    out = transform(torch.rand(1, 3, 500, 600))
    assert out.shape[-2:] == (392, 392)


def test_vit_taps_groups_and_deterministic_eval():
    torch.manual_seed(0)
    model = CrrModel(backbone=SMALL_VIT, pre_trained=False, seg_size=None).eval()
    images = torch.rand(2, 3, 56, 56)
    taps = model.encode(images)
    assert len(taps) == 8 and taps[0].shape == (2, 5 + 16, 384)
    encoder_maps = model.encoder_maps(taps, (4, 4))
    decoder_maps = model.decoder_maps(taps, (4, 4))
    assert [m.shape for m in encoder_maps] == [(2, 384, 4, 4)] * 2 == [m.shape for m in decoder_maps]
    # group 0 is the mean of taps 0-3, patch tokens only, row-major
    expected = torch.stack(taps[:4]).mean(0)[:, 5:].transpose(1, 2).reshape(2, 384, 4, 4)
    torch.testing.assert_close(encoder_maps[0], expected)
    with torch.no_grad():
        first, second = model(images), model(images)
    assert first.anomaly_map.shape == (2, 1, 56, 56) and first.pred_score.shape == (2,)
    assert torch.equal(first.pred_score, second.pred_score)
    model.bottleneck.eval_masking = True  # the authors' behaviour: element masking at test time too
    with torch.no_grad():
        third = model(images)
    assert not torch.equal(first.pred_score, third.pred_score)


def test_cnn_taps_become_tokens_by_an_isometry():
    encoder = TokenEncoder(layers=["blocks.2", "blocks.4"], embed_dim=128, **LITE)
    images = torch.rand(2, 3, 64, 64)
    tokens = encoder(images)
    assert encoder.num_prefix_tokens == 0 and encoder.grid((64, 64)) == (8, 8)
    assert [t.shape for t in tokens] == [(2, 64, 128)] * 2
    maps = encoder.backbone(images)
    raw = maps[0].flatten(2).transpose(1, 2)  # 40 channels on the 8x8 token grid: projected only
    torch.testing.assert_close(tokens[0].norm(dim=2), raw.norm(dim=2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tokens[0] @ tokens[0].transpose(1, 2), raw @ raw.transpose(1, 2), rtol=1e-3, atol=1e-3)
    assert _count(encoder) == 0 and not any(p.requires_grad for p in encoder.parameters())


def test_cnn_crr_trains_only_bottleneck_decoder_and_segmentation():
    model = CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, stage1=SHALLOW, image_size=64, crop_size=64, **LITE)
    trainable = {name.split(".")[0] for name, p in model.model.named_parameters() if p.requires_grad}
    assert trainable == {"bottleneck", "decoder", "segmentation"}
    assert model.model.groups == [[0], [1]]


def test_each_stage_loss_of_the_torch_model_reaches_only_its_own_modules():
    network = CrrModel(layers=["blocks.2", "blocks.4"], embed_dim=64, decoder_depth=2, seg_size=None, **LITE)
    images, damaged = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    loss = network.stage1_loss(images, damaged, step=0)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in network.reconstruction_modules.parameters())
    assert all(p.grad is None for p in network.segmentation.parameters())
    network.zero_grad(set_to_none=True)
    masks = (torch.rand(2, 1, 64, 64) > 0.8).float()
    loss = network.stage2_loss(damaged, masks)
    loss.backward()
    assert torch.isfinite(loss) and not network.bottleneck.training and not network.decoder.training
    assert all(p.grad is None and not p.requires_grad for p in network.reconstruction_modules.parameters())
    assert all(p.grad is not None for p in network.segmentation.parameters())


def test_stage_follows_the_global_step():
    model = CRR(
        layers=["blocks.2", "blocks.4"], embed_dim=64, stage1={**SHALLOW, "steps": 5}, stage2={"steps": 3}, **LITE
    )
    assert [model.stage(step) for step in range(8)] == [1] * 5 + [2] * 3
    assert model.total_steps == 8
    assert "max_steps" not in model.trainer_arguments and "max_epochs" not in model.trainer_arguments
    optimizers, schedulers = model.configure_optimizers()
    assert len(optimizers) == 2 and len(schedulers) == 1
    stage1_params = {id(p) for p in model.model.reconstruction_modules.parameters()}
    assert {id(p) for group in optimizers[0].param_groups for p in group["params"]} == stage1_params
    assert {id(p) for group in optimizers[1].param_groups for p in group["params"]} == {
        id(p) for p in model.model.segmentation.parameters()
    }
    without_stage2 = CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, stage1=SHALLOW, stage2={"steps": 0}, **LITE)
    assert without_stage2.model.rec_weight == 1.0  # no trained segmentation: reconstruction map only


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(BadInputError, match=r"stage1\.steps must be >= 1, got 0"):
        CRR(stage1={"steps": 0}, **LITE)
    with pytest.raises(BadInputError, match=r"stage2\.batch_size must be >= 1 or None"):
        CRR(stage2={"batch_size": 0}, **LITE)
    with pytest.raises(BadInputError, match=r"synthesis\.foreground must be 'auto' or 'off'"):
        CRR(synthesis={"foreground": "object"}, **LITE)
    with pytest.raises(BadInputError, match=r"stage2\.init must be one of reference, pytorch"):
        CRR(stage2={"init": "xavier"}, **LITE)
    with pytest.raises(BadInputError, match="stage1 has no option 'stepz'"):
        CRR(stage1={"stepz": 3}, **LITE)
    with pytest.raises(BadInputError, match="groups"):
        CRR(layers=["blocks.2", "blocks.4"], stage1={"decoder_depth": 2, "groups": [[0, 5]]}, **LITE)
    with pytest.raises(BadInputError, match="num_heads"):
        CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, num_heads=5, **LITE)


def test_reconstruct_repair_loss_ramps_hard_mining_and_scales_easy_gradients():
    loss_fn = ReconstructRepairLoss(p_final=0.9, ramp_steps=10, factor=0.1)
    target = [torch.randn(2, 8, 4, 4)]
    decoded = torch.randn(2, 8, 4, 4, requires_grad=True)
    repaired = torch.randn(2, 8, 4, 4, requires_grad=True)
    loss = loss_fn(target, [decoded], [repaired], step=5)
    assert loss_fn.cosine.p == pytest.approx(0.45)
    expected = sum(
        (1 - F.cosine_similarity(target[0].flatten(1), d.flatten(1), dim=1)).mean() for d in (decoded, repaired)
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert decoded.grad is not None and repaired.grad is not None
    loss_fn(target, [decoded], [repaired], step=50)
    assert loss_fn.cosine.p == pytest.approx(0.9)


def test_hard_mining_scales_the_gradients_of_the_easiest_points_by_the_factor():
    torch.manual_seed(0)
    target = [torch.randn(2, 8, 6, 6)]
    decoded = torch.randn(2, 8, 6, 6)
    grads = {}
    for factor in (0.1, 1.0):
        leaf = decoded.clone().requires_grad_(True)
        loss_fn = ReconstructRepairLoss(p_final=0.5, ramp_steps=1, factor=factor)
        loss_fn.cosine(target, [leaf], 10).backward()  # one term; p = 0.5 after the ramp
        grads[factor] = leaf.grad
    ratio = grads[0.1].norm(dim=1) / grads[1.0].norm(dim=1)  # per point (image, row, column)
    easy = ratio < 0.5
    torch.testing.assert_close(ratio[easy], torch.full_like(ratio[easy], 0.1))
    torch.testing.assert_close(ratio[~easy], torch.ones_like(ratio[~easy]))
    # the scaled points are the easiest half: their point-wise 1 - cos is below every hard point's
    distance = 1 - F.cosine_similarity(target[0], decoded, dim=1)
    assert easy.float().mean() == pytest.approx(0.5, abs=0.05)
    assert distance[easy].max() <= distance[~easy].min()


def test_segmentation_network_is_initialised_like_the_reference_by_default():
    torch.manual_seed(0)
    reference = CrrModel(layers=["blocks.2", "blocks.4"], embed_dim=64, decoder_depth=2, **LITE).segmentation
    torch.manual_seed(0)
    default = CrrModel(
        layers=["blocks.2", "blocks.4"], embed_dim=64, decoder_depth=2, seg_init="pytorch", **LITE
    ).segmentation
    convs = [m for m in reference.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert float(weights.mean().abs()) < 2e-3 and float(weights.std()) == pytest.approx(0.02, rel=0.05)
    scales = torch.cat([m.weight.detach().flatten() for m in norms])
    assert float(scales.mean()) == pytest.approx(1.0, abs=5e-3) and float(scales.std()) == pytest.approx(0.02, rel=0.15)
    assert all(bool((m.bias == 0).all()) for m in norms)
    # PyTorch's default: Kaiming-uniform convolutions (std depends on fan-in), BatchNorm weights exactly 1
    assert all(bool((m.weight == 1).all()) for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    for ours, theirs in zip(convs, (m for m in default.modules() if isinstance(m, nn.Conv2d)), strict=True):
        bound = 1 / (theirs.weight[0].numel() ** 0.5)  # Kaiming-uniform's bound
        assert float(theirs.weight.abs().max()) <= bound + 1e-7
        if bound < 0.04:  # wide layers: the N(0, 0.02) draw has many weights beyond it
            assert float(ours.weight.abs().max()) > bound
    with pytest.raises(BadInputError, match="seg_init"):
        CrrModel(layers=["blocks.2", "blocks.4"], embed_dim=64, decoder_depth=2, seg_init="xavier", **LITE)


def test_synthesis_uses_the_pre_processors_own_normalisation_and_round_trips_it():
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    from anomalib_repair.data.synthesis import AnomalySynthesizer

    mean, std = (0.2, 0.3, 0.4), (0.1, 0.2, 0.3)
    custom = PreProcessor(transform=Compose([Resize((32, 32)), Normalize(mean=list(mean), std=list(std))]))
    model = CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, stage1=SHALLOW, pre_processor=custom, **LITE)
    assert model.input_normalization() == (mean, std)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = custom.transform(pixels)
    damaged, masks = AnomalySynthesizer()(images, *model.input_normalization())
    outside = masks.expand_as(images) == 0
    assert outside.any()
    torch.testing.assert_close(damaged[outside], images[outside], atol=1e-6, rtol=0)  # un-normalised, re-normalised
    raw = CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, stage1=SHALLOW, pre_processor=PreProcessor(), **LITE)
    assert raw.input_normalization() == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # no Normalize: images in [0, 1]
    lite = CRR(layers=["blocks.2", "blocks.4"], embed_dim=64, stage1=SHALLOW, **LITE)
    assert lite.input_normalization() == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the default: Lite0's own statistics


def test_focal_loss_is_low_for_the_right_mask():
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., 2:5, 2:5] = 1
    right = torch.cat([-5 * masks, 5 * masks], 1) + torch.cat([5 * (1 - masks), -5 * (1 - masks)], 1)
    loss = SegmentationFocalLoss()
    assert loss(right, masks) < 1e-4 < loss(-right, masks)
    assert loss(F.interpolate(right, size=(16, 16)), masks) < 1e-4  # masks resized to the logits


def test_eval_forward_traces():
    model = CrrModel(layers=["blocks.2", "blocks.4"], embed_dim=32, decoder_depth=2, seg_size=None, **LITE).eval()
    images = torch.rand(1, 3, 64, 64)

    class Tuple(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(x)
            return out.pred_score, out.anomaly_map

    with torch.no_grad():
        traced = torch.jit.trace(Tuple(model), images, check_trace=False)
        expected = model(images)
        scores, maps = traced(images)
    torch.testing.assert_close(scores, expected.pred_score)
    torch.testing.assert_close(maps, expected.anomaly_map)


def test_plain_ddp_is_refused_in_one_line_and_lightnings_unused_parameter_strategies_pass():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy, StrategyRegistry

    from anomalib_repair.models.crr.lightning_model import DDP_STRATEGY, check_ddp_strategy

    with pytest.raises(BadInputError, match=DDP_STRATEGY) as error:
        check_ddp_strategy(DDPStrategy())
    assert "\n" not in str(error.value)
    named = StrategyRegistry.get(DDP_STRATEGY)  # Lightning's registered name, as --trainer.strategy gives it
    check_ddp_strategy(named)
    check_ddp_strategy(DDPStrategy(find_unused_parameters=True, static_graph=False))
    check_ddp_strategy(SingleDeviceStrategy(device=torch.device("cpu")))  # not DDP: nothing to check


@pytest.mark.parametrize("shape", [(64, 40), (40, 40), (40, 64)])
def test_token_projections_are_orthonormal_and_torchs_own_where_torch_draws_the_same(shape):
    from anomalib_repair.models.crr.torch_model import _orthonormal_

    matrix = torch.empty(shape)
    _orthonormal_(matrix, torch.Generator().manual_seed(3))
    small = min(shape)
    gram = matrix.T @ matrix if shape[0] >= shape[1] else matrix @ matrix.T
    torch.testing.assert_close(gram, torch.eye(small), rtol=0, atol=1e-5)
    if shape[0] >= shape[1]:  # tall or square: exactly torch's orthogonal_ with the same generator
        expected = torch.empty(shape)
        nn.init.orthogonal_(expected, generator=torch.Generator().manual_seed(3))
        assert torch.equal(matrix, expected)
