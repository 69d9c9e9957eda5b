"""MFRNet pieces: crossed masks partition the grid, hybrid loss against torchmetrics, shapes, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.image import structural_similarity_index_measure

from anomalib_repair import MFRNet
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.mfrnet import CrossedMaskGenerator, HybridLoss, MfrnetModel
from anomalib_repair.models.mfrnet.loss import ssim_window
from anomalib_repair.models.mfrnet.masks import blocks_to_cells, diagonal_assignment, random_assignment
from anomalib_repair.recipes import recipe_path

LITE = {"backbone": "tf_efficientnet_lite0.pypi", "layers": ["blocks.1", "blocks.2", "blocks.4"]}
SMALL = {**LITE, "embed_dim": 32, "depth": 1, "num_heads": 4, "mlp_ratio": 2.0, "pre_trained": False}


# ---------------------------------------------------------------------- crossed masks
def _grids_and_masks() -> st.SearchStrategy[tuple[int, int, int, int]]:
    """(height, width, k, n) with n between 2 and the number of k x k blocks (edge blocks may be partial)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, int, int, int]:
        height = draw(st.integers(1, 23))
        width = draw(st.integers(1, 23))
        k = draw(st.integers(1, 5))
        blocks = math.ceil(height / k) * math.ceil(width / k)
        if blocks < 2:
            width = k + 1  # at least two blocks
            blocks = math.ceil(height / k) * math.ceil(width / k)
        n = draw(st.integers(2, min(blocks, 9)))
        return height, width, k, n

    return build()


@settings(max_examples=60, deadline=None)
@given(_grids_and_masks(), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_masks_partition_the_grid_every_cell_hidden_exactly_once(case, batch, seed):
    height, width, k, n = case
    generator = CrossedMaskGenerator((height, width), k=k, n=n)
    fixed = generator.test_masks
    assert fixed.shape == (n, 1, height, width)
    assert torch.equal(fixed.sum(0), torch.ones(1, height, width))  # complementary, complete
    random = generator.random_masks(batch, generator=torch.Generator().manual_seed(seed))
    assert random.shape == (n, batch, 1, height, width)
    assert torch.equal(random.sum(0), torch.ones(batch, 1, height, width))
    assert set(random.unique().tolist()) <= {0.0, 1.0}


@settings(max_examples=40, deadline=None)
@given(_grids_and_masks(), st.integers(0, 2**31 - 1))
def test_masks_hide_whole_k_by_k_blocks(case, seed):
    height, width, k, n = case
    generator = CrossedMaskGenerator((height, width), k=k, n=n)
    masks = generator.random_masks(1, generator=torch.Generator().manual_seed(seed))[:, 0, 0]
    for i in range(height):
        for j in range(width):
            corner = masks[:, (i // k) * k, (j // k) * k]  # every cell shares its block's mask
            assert torch.equal(masks[:, i, j], corner)


@settings(max_examples=40, deadline=None)
@given(_grids_and_masks(), st.integers(0, 2**31 - 1))
def test_random_assignment_is_balanced(case, seed):
    height, width, k, n = case
    blocks = (math.ceil(height / k), math.ceil(width / k))
    assignment = random_assignment(4, blocks, n, generator=torch.Generator().manual_seed(seed))
    counts = torch.stack([torch.bincount(a.flatten(), minlength=n) for a in assignment])
    assert int((counts.amax(1) - counts.amin(1)).max()) <= 1


def test_fixed_test_masks_are_the_diagonal_pattern_with_partial_edge_blocks():
    generator = CrossedMaskGenerator((5, 5), k=2, n=3)  # 3 x 3 blocks, the last row/column one cell wide
    expected = torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    assert torch.equal(diagonal_assignment((3, 3), 3), expected)
    cells = blocks_to_cells(expected, 2, (5, 5))
    assert cells[4, 4] == 1 and cells[0, 1] == 0 and cells[2, 1] == 1
    for subset in range(3):
        torch.testing.assert_close(generator.test_masks[subset, 0], (cells == subset).float())


def test_random_masks_change_between_calls_and_the_test_masks_do_not():
    generator = CrossedMaskGenerator((16, 16), k=2, n=3)
    first, second = generator.random_masks(2), generator.random_masks(2)
    assert not torch.equal(first, second)
    assert torch.equal(generator.fixed_masks(2)[:, 0], generator.test_masks)
    assert torch.equal(generator.fixed_masks(2)[:, 1], generator.test_masks)


@pytest.mark.parametrize(("k", "n"), [(0, 2), (2, 1), (4, 5)])
def test_bad_mask_options_fail_with_one_line(k, n):
    with pytest.raises(BadInputError) as error:
        CrossedMaskGenerator((8, 8), k=k, n=n)  # k = 4 on 8 x 8: only 4 blocks
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------- hybrid loss
def test_identical_maps_have_zero_loss_and_ssim_one():
    loss = HybridLoss()
    features = torch.randn(2, 6, 16, 16)
    assert float(loss(features, features)) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(loss.ssim_map(features, features), torch.ones_like(features))


@pytest.mark.parametrize("pixel_loss", ["l2", "l1"])
def test_hybrid_loss_matches_torchmetrics_and_the_pixel_term_on_a_known_pair(pixel_loss):
    torch.manual_seed(0)
    target = torch.randn(2, 5, 20, 20)
    restored = target + 0.5 * torch.randn_like(target)
    loss = HybridLoss(pixel_loss=pixel_loss, pixel_weight=0.7, ssim_weight=1.3, ssim_sigma=1.5, ssim_data_range=6.0)
    ssim = structural_similarity_index_measure(restored, target, sigma=1.5, data_range=6.0, reduction="none")
    # The mean of the per-position SSIM map is the library's SSIM value of each image.
    torch.testing.assert_close(loss.ssim_map(restored, target).flatten(1).mean(1), ssim)
    pixel = (restored - target).square() if pixel_loss == "l2" else (restored - target).abs()
    expected = 0.7 * pixel.mean() + 1.3 * (1 - ssim.mean())
    torch.testing.assert_close(loss(restored, target), expected)
    assert loss.score_map(restored, target).shape == (2, 1, 20, 20)


def test_score_map_is_local_a_changed_cell_scores_highest_near_itself():
    target = torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    restored = target.clone()
    restored[..., 4, 11] += 3.0
    scores = HybridLoss().score_map(restored, target)[0, 0]
    assert divmod(int(scores.argmax()), 16) == (4, 11)
    assert float(scores[12, 2]) == pytest.approx(0.0, abs=1e-6)  # outside the SSIM window


def test_bad_loss_options_fail_with_one_line():
    with pytest.raises(BadInputError, match="pixel_loss"):
        HybridLoss(pixel_loss="huber")
    with pytest.raises(BadInputError, match="SSIM window"):
        MfrnetModel(**SMALL, input_size=(32, 32), feature_stride=8)  # 4 x 4 grid, 11 x 11 window


# ---------------------------------------------------------------------- network
@pytest.fixture(scope="module")
def default_model() -> MFRNet:
    return MFRNet()  # vgg16.tv_in1k: built with random weights, nothing fetched (built once: VGG16 is large)


def test_default_mfrnet_builds_without_downloading_and_counts_its_trainable_parameters(default_model):
    assert not bool(default_model.model.aggregator.backbone.weights_loaded)
    assert default_model.model.aggregator.backbone.out_channels == [128, 256, 512]
    assert default_model.model.mask_generator.test_masks.shape == (3, 1, 32, 32)
    trainable = sum(p.numel() for p in default_model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in default_model.model.restoration.parameters()) == 3_895_168
    assert all(not p.requires_grad for p in default_model.model.aggregator.parameters())


def test_reduced_cpu_recipe_trains_the_papers_width_with_two_blocks():
    init = yaml.safe_load(recipe_path("mfrnet/cpu_reduced").read_text())["model"]["init_args"]
    assert (init["embed_dim"], init["depth"]) == (256, 2)  # the paper's width, chosen on the tune half; 2 of 4 blocks
    model = MFRNet(**{**init, "pre_trained": False})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in model.model.restoration.parameters()) == 1_283_248


def test_default_input_pipeline_is_256_pixels_with_imagenet_normalisation(default_model):
    transform = default_model.pre_processor.transform
    out = transform(torch.rand(1, 3, 300, 400))
    assert out.shape[-2:] == (256, 256)
    assert transform.transforms[-1].mean == pytest.approx([0.485, 0.456, 0.406])


def _small_model(**overrides: object) -> MfrnetModel:
    kwargs: dict = {**SMALL, "input_size": (96, 96), "feature_stride": 8, "k": 2, "n": 3}
    kwargs.update(overrides)
    return MfrnetModel(**kwargs)


def test_aggregator_brings_every_layer_to_one_grid_with_unit_scale_channels():
    model = _small_model()
    features = model.aggregator(torch.rand(2, 3, 96, 96))
    assert features.shape == (2, 24 + 40 + 112, 12, 12)
    assert features.mean(1).abs().max() < 0.2  # each layer is normalised over its channels before resizing


def test_feature_norm_none_keeps_the_raw_activations():
    images = torch.rand(2, 3, 96, 96)
    normalised = _small_model().aggregator
    raw = _small_model(feature_norm="none").aggregator
    raw.backbone.load_state_dict(normalised.backbone.state_dict())
    expected = torch.cat([raw._to_grid(feature) for feature in raw.backbone(images)], dim=1)
    torch.testing.assert_close(raw(images), expected)
    assert not torch.allclose(raw(images), normalised(images))
    with pytest.raises(BadInputError, match="feature_norm must be one of layer, none"):
        _small_model(feature_norm="batch")


def test_image_score_is_the_map_maximum_or_the_mean_of_its_top_share():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 96, 96)
    maximum = _small_model().eval()
    top = _small_model(top_ratio=0.01).eval()
    top.load_state_dict(maximum.state_dict())
    with torch.no_grad():
        by_max, by_top = maximum(images), top(images)
    flat = by_max.anomaly_map.flatten(1)
    torch.testing.assert_close(by_max.pred_score, flat.amax(dim=1))
    torch.testing.assert_close(by_top.anomaly_map, by_max.anomaly_map)
    torch.testing.assert_close(by_top.pred_score, flat.topk(int(flat.shape[1] * 0.01), dim=1).values.mean(dim=1))
    assert (by_top.pred_score < by_max.pred_score).all()


def test_eval_forward_shapes_and_determinism():
    torch.manual_seed(0)
    model = _small_model().eval()
    images = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        first, second = model(images), model(images)
        alone = model(images[1:2])
    assert first.pred_score.shape == (3,)
    assert first.anomaly_map.shape == (3, 1, 96, 96)
    torch.testing.assert_close(first.anomaly_map, second.anomaly_map, rtol=0, atol=0)
    torch.testing.assert_close(first.pred_score, second.pred_score, rtol=0, atol=0)
    torch.testing.assert_close(alone.anomaly_map[0], first.anomaly_map[1])  # no dependence on the batch


def test_each_position_is_scored_from_the_pass_where_it_was_hidden():
    torch.manual_seed(0)
    model = _small_model(n=2).eval()
    features = torch.randn(1, model.aggregator.out_channels, 12, 12)
    masks = model.mask_generator.fixed_masks(1)
    with torch.no_grad():
        combined = model.restore(features, masks)
        first = model.restoration(features, masks[0])
        second = model.restoration(features, masks[1])
    torch.testing.assert_close(combined, masks[0] * first + masks[1] * second)
    # What a hidden cell is restored to does not depend on its own features.
    changed = features.clone()
    hidden = masks[0, 0, 0].nonzero()[0]
    changed[..., hidden[0], hidden[1]] += 10.0
    with torch.no_grad():
        again = model.restoration(changed, masks[0])
    torch.testing.assert_close(again[..., hidden[0], hidden[1]], first[..., hidden[0], hidden[1]])


def test_training_loss_backpropagates_into_the_restoration_only():
    model = _small_model()
    loss = model.training_loss(torch.rand(2, 3, 96, 96), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0
    assert model.restoration.mask_token.grad is not None
    assert all(p.grad is None for p in model.aggregator.parameters())


def test_one_mask_training_counts_only_the_hidden_cells():
    model = _small_model(train_masks="one")
    generator = torch.Generator().manual_seed(0)
    loss = model.training_loss(torch.rand(2, 3, 96, 96), generator=generator)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert model.restoration.mask_token.grad is not None
    with pytest.raises(BadInputError, match="train_masks"):
        _small_model(train_masks="half")


@pytest.mark.parametrize(("sigma", "size"), [(1.5, (12, 12)), (1.5, (16, 24)), (2.0, (20, 20)), (1.5, (6, 6))])
def test_ssim_map_equals_torchmetrics_full_image_map(sigma, size) -> None:
    """The matrix-filtered SSIM map is torchmetrics' (the old path) to float rounding, any sigma and map size."""
    loss = HybridLoss(ssim_sigma=sigma)
    generator = torch.Generator().manual_seed(0)
    restored = torch.randn(3, 8, *size, generator=generator)
    target = restored + 0.3 * torch.randn(3, 8, *size, generator=generator)
    if min(size) <= ssim_window(sigma) // 2:  # torchmetrics' reflect padding needs the map wider than the radius
        assert torch.isfinite(loss.ssim_map(restored, target)).all()
        return
    _, expected = structural_similarity_index_measure(
        restored, target, gaussian_kernel=True, sigma=sigma, data_range=6.0, reduction="none", return_full_image=True
    )
    torch.testing.assert_close(loss.ssim_map(restored, target), expected, atol=1e-5, rtol=1e-5)


def test_restore_combines_the_masked_passes_as_separate_passes_would() -> None:
    """One projection in and out for the n passes (they partition the grid): equal to n full passes combined."""
    model = _small_model().eval()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, model.aggregator.out_channels, *model.mask_generator.grid_size, generator=generator)
    for masks in (model.mask_generator.fixed_masks(2), model.mask_generator.random_masks(2, generator=generator)):
        separate = sum(model.restoration(features, mask) * mask for mask in masks)
        with torch.no_grad():
            torch.testing.assert_close(model.restore(features, masks), separate, atol=1e-5, rtol=1e-5)


def test_hybrid_block_attention_is_standard_multi_head_attention_and_keeps_its_state_dict_keys():
    from torch import nn

    from anomalib_repair.models.mfrnet.torch_model import HybridTransformerBlock

    block = HybridTransformerBlock(dim=32, num_heads=4).eval()
    assert {key for key in block.state_dict() if key.startswith("attention.")} == {
        "attention.qkv.weight",
        "attention.qkv.bias",
        "attention.proj.weight",
        "attention.proj.bias",
    }  # the keys of the earlier hand-written attention: older checkpoints load unchanged
    reference = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(block.attention.qkv.weight)
        reference.in_proj_bias.copy_(block.attention.qkv.bias)
        reference.out_proj.weight.copy_(block.attention.proj.weight)
        reference.out_proj.bias.copy_(block.attention.proj.bias)
        tokens = torch.randn(2, 10, 32)
        expected = reference(tokens, tokens, tokens, need_weights=False)[0]
        torch.testing.assert_close(block.attention(tokens), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(BadInputError, match="multiple of num_heads"):
        HybridTransformerBlock(dim=30, num_heads=4)
