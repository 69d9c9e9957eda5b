"""CRAS network pieces: parameter count, shapes, center matching, synthesis, cache, checkpoint state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_repair import CRAS
from anomalib_repair.components.feature_cache import FeatureCache, MemoisedEmbedding
from anomalib_repair.components.patch_features import PatchAggregator, pooling_kernels
from anomalib_repair.components.triangular import lower_triangular_product
from anomalib_repair.data.synthesis import distance_guided_noise
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.base import build_pre_processor
from anomalib_repair.models.cras import CrasModel

LITE = {"backbone": "tf_efficientnet_lite0.pypi", "layers": ["blocks.2", "blocks.4"]}


def test_default_cras_has_the_papers_trainable_parameters_without_downloading():
    model = CRAS()  # wide_resnet50_2.tv_in1k: built with random weights, nothing fetched
    assert not bool(model.model.backbone.weights_loaded)
    adaptor = sum(p.numel() for p in model.model.adaptor.parameters())
    discriminator = sum(p.numel() for p in model.model.discriminator.parameters())
    trainable = sum(p.numel() for p in model.model.parameters() if p.requires_grad)
    assert adaptor == 1536 * 1536 + 1536  # 2.36 M
    assert discriminator == 3072 * 1536 + 1536 + 2 * 1536 + 1536 * 768 + 768 + 2 * 768 + 768  # 5.91 M
    assert trainable == adaptor + discriminator
    assert round(trainable / 1e6, 2) == 8.27
    assert all(not p.requires_grad for p in model.model.backbone.parameters())


def test_default_input_pipeline_is_the_authors_shorter_side_resize_center_crop_and_imagenet_normalisation():
    from torchvision.transforms.v2 import CenterCrop, Normalize, Resize

    transform = CRAS().pre_processor.transform
    image = torch.rand(1, 3, 300, 520, generator=torch.Generator().manual_seed(0))  # non-square: 300 is the shorter
    reference = Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(CenterCrop(288)(Resize(329)(image)))
    out = transform(image)
    assert out.shape == (1, 3, 288, 288)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    # the aspect ratio is kept: squashing first gives a different picture
    squashed = CRAS(resize_mode="square").pre_processor.transform(image)
    assert squashed.shape == out.shape
    assert (squashed - out).abs().mean() > 0.05


def test_square_resize_mode_squashes_every_image_to_the_resize_size_then_crops():
    from torchvision.transforms.v2 import CenterCrop, Resize

    image = torch.rand(1, 3, 300, 520, generator=torch.Generator().manual_seed(1))
    transform = CRAS(**LITE, image_size=160, crop_size=128, resize_mode="square").pre_processor.transform
    expected = CenterCrop(128)(Resize((160, 160))(image))
    torch.testing.assert_close(transform(image), (expected - 0.5) / 0.5, atol=1e-5, rtol=0)


def test_wrn_patch_grid_is_36_by_36_with_1536_dims():
    model = CrasModel(pre_trained=False)
    features, grid = model.embed(torch.rand(1, 3, 288, 288))
    assert grid == (36, 36)
    assert features.shape == (1, 1296, 1536)


@pytest.mark.parametrize("in_channels", [None, (4, 8)], ids=["by-unfolding", "as-convolutions"])
def test_patch_aggregator_matches_a_direct_computation(in_channels):
    torch.manual_seed(0)
    fine, coarse = torch.rand(1, 4, 6, 6), torch.rand(1, 8, 3, 3)
    out = PatchAggregator(pool_dim=12, in_channels=in_channels)([fine, coarse])
    # Position (2, 3) by hand: each layer's 3×3 neighbourhoods (zero padded), coarse ones upsampled first.
    fine_patches = F.unfold(fine, 3, padding=1).reshape(1, -1, 6, 6)[0, :, 2, 3]
    coarse_patches = F.interpolate(F.unfold(coarse, 3, padding=1).reshape(1, -1, 3, 3), size=(6, 6), mode="bilinear")
    coarse_patch = coarse_patches[0, :, 2, 3]
    pooled = [F.adaptive_avg_pool1d(v.view(1, 1, -1), 12).flatten() for v in (fine_patches, coarse_patch)]
    expected = F.adaptive_avg_pool1d(torch.cat(pooled).view(1, 1, -1), 12).flatten()
    torch.testing.assert_close(out[0, 2 * 6 + 3], expected)


@pytest.mark.parametrize(
    ("channels", "sizes", "dim"),
    [
        ((40, 112), (16, 8), 384),
        ((40, 112), (15, 8), 384),
        ((24, 40, 112), (32, 16, 8), 128),
        ((512, 1024), (9, 5), 1536),
    ],
)
def test_patch_aggregator_convolutions_equal_the_unfolding_path(channels, sizes, dim):
    """The fused path (one convolution per layer) gives the literal path's vectors, any widths, grids and sizes."""
    generator = torch.Generator().manual_seed(0)
    aggregator = PatchAggregator(pool_dim=dim, in_channels=channels)
    features = [3 * torch.randn(2, c, s, s + 1, generator=generator) for c, s in zip(channels, sizes, strict=True)]
    torch.testing.assert_close(aggregator(features), aggregator.by_unfolding(features), atol=1e-5, rtol=1e-5)
    assert not any(key.startswith("kernel") for key in aggregator.state_dict())  # checkpoints keep their keys
    other = [torch.randn(1, c + 1, s, s) for c, s in zip(channels, sizes, strict=True)]  # other widths: unfolding
    torch.testing.assert_close(aggregator(other), aggregator.by_unfolding(other))


@pytest.mark.parametrize(
    ("channels", "dim", "tiled"),
    [((40, 112), 384, True), ((40, 112), 383, False), ((24, 40, 112), 128, False), ((40,), 64, True)],
)
def test_patch_aggregator_convolves_only_the_output_channels_each_layer_reaches(channels, dim, tiled):
    """Each layer's kernel is cut to the output block it reaches (two layers: one half each); the result equals the
    full kernels' sum (the earlier path) to float rounding, whether the blocks tile the outputs or share a border."""
    generator = torch.Generator().manual_seed(1)
    aggregator = PatchAggregator(pool_dim=dim, in_channels=channels)
    full = pooling_kernels(channels, dim, 3)
    assert aggregator.tiled is tiled
    for index, (first, stop) in enumerate(aggregator.spans):
        assert getattr(aggregator, f"kernel_{index}").shape[0] == stop - first <= dim
        assert stop - first < dim or len(channels) == 1
        assert full[index][:first].abs().sum() == 0 and full[index][stop:].abs().sum() == 0
    if tiled and len(channels) == 2:
        assert aggregator.spans == [(0, dim // 2), (dim // 2, dim)]
    features = [torch.randn(2, c, 16 // 2**i, 16 // 2**i, generator=generator) for i, c in enumerate(channels)]
    expected = sum(
        F.interpolate(F.conv2d(f, k, padding=1), size=(16, 16), mode="bilinear")
        for f, k in zip(features, full, strict=True)
    )
    torch.testing.assert_close(aggregator(features), expected.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


def _small_model(num_classes: int = 2, dim: int = 64) -> CrasModel:
    model = CrasModel(**LITE, pre_trained=False, embed_dim=dim)
    _, grid = model.embed(torch.rand(1, 3, 64, 64))
    model.set_centers(torch.randn(num_classes, grid[0] * grid[1], dim))
    return model.eval()


def test_forward_gives_anomalib_inference_batch_with_full_size_maps():
    model = _small_model()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 64, 64))
    assert out.pred_score.shape == (3,)
    assert out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.pred_score).all()


def test_image_score_readings_of_one_forward():
    model = _small_model()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        model.image_score = "patch_max"
        features, _grid = model.embed(images)
        adapted = model.adaptor(features)
        centers = model.match_centers(adapted, model.infer_classes(adapted))
        patch = model.score(adapted.flatten(0, 1), centers.flatten(0, 1)).reshape(3, -1)
        torch.testing.assert_close(model(images).pred_score, patch.amax(dim=1))
        model.image_score = "map_max"
        output = model(images)
        torch.testing.assert_close(output.pred_score, output.anomaly_map.flatten(1).amax(dim=1))
        model.image_score, model.top_ratio = "map_top_mean", 0.25
        output = model(images)
        expected = output.anomaly_map.flatten(1).sort(dim=1, descending=True).values[:, : 64 * 64 // 4].mean(dim=1)
        torch.testing.assert_close(output.pred_score, expected)
    assert CRAS(**LITE, pre_trained=False, image_score="map_max").model.image_score == "map_max"


def _saturating_pair() -> tuple[CrasModel, CrasModel, torch.Tensor]:
    """Two copies of one model (logit / probability scores) whose logits are scaled far past sigmoid saturation."""
    torch.manual_seed(0)
    logit_model = _small_model()
    with torch.no_grad():
        logit_model.discriminator[-1].weight.abs_().mul_(1e3)  # some patch of every image: a logit of hundreds
    probability_model = _small_model()
    probability_model.load_state_dict(logit_model.state_dict())
    probability_model.score_mode = "probability"
    return logit_model, probability_model, torch.rand(6, 3, 64, 64)


def test_saturated_probabilities_tie_every_image_and_logit_scores_do_not():
    logit_model, probability_model, images = _saturating_pair()
    with torch.no_grad():
        tied = probability_model(images).pred_score
        ranked = logit_model(images).pred_score
    # The paper's score: every image's max patch probability is exactly 1.0 in float32, so AUROC would be 0.5.
    assert torch.equal(tied, torch.ones_like(tied))
    # The default score (the max logit) keeps the images apart, and it is a finite, large number.
    assert ranked.unique().numel() == len(images)
    assert (ranked > 17).all() and torch.isfinite(ranked).all()


def test_logit_and_probability_scores_rank_images_alike_below_saturation():
    torch.manual_seed(1)
    logit_model = _small_model()
    probability_model = _small_model()
    probability_model.load_state_dict(logit_model.state_dict())
    probability_model.score_mode = "probability"
    images = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        logit_out, probability_out = logit_model(images), probability_model(images)
    torch.testing.assert_close(torch.sigmoid(logit_out.pred_score), probability_out.pred_score)
    assert torch.equal(logit_out.pred_score.argsort(), probability_out.pred_score.argsort())


def test_cras_loss_takes_logits_and_equals_bce_on_the_sigmoid():
    from anomalib_repair.models.cras.loss import CrasLoss

    real, fake = torch.randn(50), torch.randn(50)
    expected = F.binary_cross_entropy(torch.sigmoid(real), torch.zeros(50)) + F.binary_cross_entropy(
        torch.sigmoid(fake), torch.ones(50)
    )
    torch.testing.assert_close(CrasLoss()(real, fake), expected)
    saturated = CrasLoss()(torch.tensor([40.0]), torch.tensor([-40.0]))  # BCE on σ would clamp log(0) to -100
    torch.testing.assert_close(saturated, torch.tensor(80.0), atol=1e-4, rtol=0)


def test_unknown_score_mode_is_one_clear_error():

    with pytest.raises(BadInputError, match="score_mode must be one of logit, probability"):
        CRAS(**LITE, pre_trained=False, score_mode="sigmoid")


def test_class_inference_picks_the_center_set_the_image_resembles():
    model = _small_model(num_classes=3)
    features = model.centers[[2, 0, 1]].float() + 0.01 * torch.randn(3, *model.centers.shape[1:])
    assert model.infer_classes(features).tolist() == [2, 0, 1]


def test_center_matching_is_position_free_nearest_by_cosine():
    model = _small_model(num_classes=1, dim=8)
    centers = model.centers[0]
    order = torch.randperm(centers.shape[0])
    features = 3.0 * centers[order].unsqueeze(0)  # scaled copies, shuffled positions: cosine finds them
    matched = model.match_centers(features, torch.tensor([0]))
    torch.testing.assert_close(matched[0], centers[order])


@pytest.mark.parametrize("center_dtype", ["float32", "float16"])
def test_center_matching_takes_whole_rows_equal_to_the_per_element_gather(center_dtype):
    """Rows indexed from the flattened centers equal ``torch.gather`` on each image's set (the earlier path), for
    images of several classes, across chunks, with centers stored in half precision."""
    model = CrasModel(**LITE, pre_trained=False, embed_dim=8, center_dtype=center_dtype)
    model.set_centers(torch.randn(3, 20, 8, generator=torch.Generator().manual_seed(0)))
    model.match_chunk = 2
    features = torch.randn(5, 12, 8, generator=torch.Generator().manual_seed(1))  # 12 patches, 20 centers each
    classes = torch.tensor([2, 0, 1, 2, 1])
    bank = model.centers[classes].float()
    nearest = torch.bmm(F.normalize(features, dim=2), F.normalize(bank, dim=2).transpose(1, 2)).argmax(dim=2)
    expected = torch.gather(bank, 1, nearest.unsqueeze(-1).expand(-1, -1, 8))
    torch.testing.assert_close(model.match_centers(features, classes), expected, atol=0, rtol=0)


@pytest.mark.parametrize("center_dtype", ["float32", "float16"])
def test_centers_storage_precision_and_state_dict_round_trip(center_dtype):
    model = CrasModel(**LITE, pre_trained=False, embed_dim=32, center_dtype=center_dtype)
    model.set_centers(torch.randn(4, 16, 32))
    assert model.centers.dtype == getattr(torch, center_dtype)
    fresh = CrasModel(**LITE, pre_trained=False, embed_dim=32, center_dtype=center_dtype)
    fresh.load_state_dict(model.state_dict())  # the (0, 0, D) buffer grows to the stored (K, P, D)
    torch.testing.assert_close(fresh.centers, model.centers)
    assert fresh.num_classes == 4


def test_distance_guided_noise_follows_the_papers_formula():
    generator = torch.Generator().manual_seed(0)
    features = torch.zeros(4, 16)
    centers = torch.zeros(4, 16)
    centers[:, 0] = torch.tensor([1.0, 2.0, 4.0, 8.0])  # ‖f − c‖ = 1, 2, 4, 8
    fake = distance_guided_noise(features, centers, sigma=0.5, k=0.3, generator=generator)
    noise = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 0.5
    ratio = noise.norm(dim=1) / torch.tensor([1.0, 2.0, 4.0, 8.0])
    scale = (ratio / ratio.mean() - 1) * 0.3 + 1
    torch.testing.assert_close(fake, scale.unsqueeze(1) * noise)
    # k = 0: plain Gaussian noise of std sigma; the scale never depends on anything else.
    plain = distance_guided_noise(features, centers, sigma=0.5, k=0.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, noise)


def test_distance_guided_noise_scales_noise_down_far_from_the_center():
    torch.manual_seed(0)
    features = torch.zeros(2000, 64)
    centers = torch.zeros(2000, 64)
    centers[:1000, 0] = 1.0  # near the center
    centers[1000:, 0] = 10.0  # far from it
    perturbation = (distance_guided_noise(features, centers, sigma=0.015, k=0.3) - features).norm(dim=1)
    near, far = perturbation[:1000].mean(), perturbation[1000:].mean()
    assert near > far  # s ∝ 1/‖f − c‖ before the pull toward 1
    assert perturbation.mean() == pytest.approx(0.015 * 8, rel=0.1)  # σ·√D on average


def test_synthesis_carries_no_gradient_into_the_noise():
    features = torch.randn(8, 16, requires_grad=True)
    fake = distance_guided_noise(features, torch.zeros(8, 16))
    fake.sum().backward()
    torch.testing.assert_close(features.grad, torch.ones(8, 16))


@pytest.mark.parametrize("location", ["memory", "disk"])
def test_feature_cache_round_trip(tmp_path, location):
    directory = tmp_path if location == "disk" else None
    cache = FeatureCache(3, (4, 5), location=location, directory=directory, dtype="float16")
    values = torch.randn(2, 4, 5)
    cache.put(["a.png", "b.png"], values)
    assert cache.has_all(["b.png", "a.png"]) and not cache.has_all(["a.png", "c.png"])
    torch.testing.assert_close(cache.get(["b.png", "a.png"], torch.device("cpu")), values[[1, 0]].half().float())
    cache.put(["c.png", "d.png"], values)  # d exceeds the capacity and is skipped
    assert "c.png" in cache and "d.png" not in cache
    assert cache.nbytes == 3 * 4 * 5 * 2


def test_memoised_embedding_embeds_each_training_image_once():
    calls = []

    def reference(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(2).transpose(1, 2) * 2  # (B, P, C)

    def embed(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        return reference(images)

    memo = MemoisedEmbedding(embed, capacity=3)
    first, second = torch.rand(2, 3, 2, 2), torch.rand(1, 3, 2, 2)
    assert torch.equal(memo(first, ["a", "b"]), reference(first))
    assert torch.equal(memo(first, ["b", "a"]), reference(first[[1, 0]]))  # from the cache, in the batch's order
    assert torch.equal(memo(second, ["c"]), reference(second))
    assert torch.equal(memo(torch.zeros(1, 3, 2, 2), ["c"]), reference(second))  # the cache answers
    assert calls == [2, 1]
    memo(torch.rand(2, 3, 2, 2), ["c", "d"])  # "d" does not fit: the batch is embedded every time
    memo(torch.rand(2, 3, 2, 2), ["c", "d"])
    assert calls == [2, 1, 2, 2]


def test_training_loss_of_the_torch_model_trains_adaptor_and_discriminator_only():
    model = _small_model().train()
    loss = model.training_loss(torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in [*model.adaptor.parameters(), *model.discriminator.parameters()])
    assert all(p.grad is None for p in model.backbone.parameters())
    model.noise_std = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        model.training_loss(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]), ["a", "b"])


def test_float32_feature_cache_returns_the_features_exactly(tmp_path):
    cache = FeatureCache(2, (4, 5), location="disk", directory=tmp_path)  # float32 by default
    values = torch.randn(2, 4, 5) * 100
    cache.put(["a.png", "b.png"], values)
    assert torch.equal(cache.get(["a.png", "b.png"], torch.device("cpu")), values)
    assert cache.nbytes == 2 * 4 * 5 * 4
    half = FeatureCache(2, (4, 5), dtype="float16")
    half.put(["a.png", "b.png"], values)
    rounded = half.get(["a.png", "b.png"], torch.device("cpu"))
    assert not torch.equal(rounded, values)
    assert ((rounded - values).abs() <= values.abs() * 2**-11).all()  # float16's rounding bound


def test_bad_options_fail_with_one_line():
    with pytest.raises(ValueError, match="feature_cache") as error:
        CRAS(**LITE, feature_cache="gpu")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="center_dtype"):
        CRAS(**LITE, center_dtype="int8")
    with pytest.raises(ValueError, match="feature_cache_dtype"):
        CRAS(**LITE, feature_cache="memory", feature_cache_dtype="bfloat16")
    with pytest.raises(ValueError, match="resize_mode"):
        CRAS(**LITE, resize_mode="letterbox")
    with pytest.raises(ValueError, match="image_score"):
        CRAS(**LITE, image_score="mean")
    with pytest.raises(ValueError, match="top_ratio"):
        CRAS(**LITE, image_score="map_top_mean", top_ratio=0.0)
    with pytest.raises(ValueError, match="needs a crop_size"):
        build_pre_processor("tf_efficientnet_lite0.pypi", 128, None, "shorter_side")


def _whitened_model(
    num_classes: int = 2, dim: int = 16, residual: str = "whitened"
) -> tuple[CrasModel, torch.Tensor, torch.Tensor]:
    model = CrasModel(**LITE, pre_trained=False, embed_dim=dim, residual=residual)
    _, grid = model.embed(torch.rand(1, 3, 64, 64))
    positions = grid[0] * grid[1]
    model.set_centers(torch.randn(num_classes, positions, dim))
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(num_classes, positions, dim, generator=generator)
    mixing = torch.randn(num_classes, positions, dim, dim, generator=generator)
    covariances = mixing @ mixing.transpose(-1, -2) / dim + 0.1 * torch.eye(dim)
    model.set_position_statistics(means, covariances)
    return model.eval(), means, covariances


def test_whitened_residual_norm_is_the_mahalanobis_distance_at_each_position():
    model, means, covariances = _whitened_model()
    features = torch.randn(3, means.shape[1], means.shape[2]) * 2
    classes = torch.tensor([1, 0, 1])
    residuals = model.whitened_residuals(features, classes)
    regularised = covariances + model.whiten_eps * torch.eye(means.shape[2])
    offsets = features - means[classes]
    expected = torch.einsum("bpd,bpde,bpe->bp", offsets, torch.linalg.inv(regularised[classes]), offsets)
    torch.testing.assert_close(residuals.pow(2).sum(dim=2), expected, rtol=1e-4, atol=1e-4)
    # whitened residuals of the category's own distribution have unit covariance
    samples = torch.distributions.MultivariateNormal(means[0, 0], covariance_matrix=regularised[0, 0]).sample((4000,))
    at_position = torch.zeros(4000, means.shape[1], means.shape[2])
    at_position[:, 0] = samples
    white = model.whitened_residuals(at_position, torch.zeros(4000, dtype=torch.long))[:, 0]
    torch.testing.assert_close(torch.cov(white.T), torch.eye(means.shape[2]), atol=0.12, rtol=0)


def test_whitened_residual_export_path_equals_the_eager_one(monkeypatch):
    import anomalib_repair.models.cras.torch_model as cras_torch

    model, means, _ = _whitened_model(num_classes=3)
    features = torch.randn(5, means.shape[1], means.shape[2])
    classes = torch.tensor([2, 0, 1, 2, 0])
    eager = model.whitened_residuals(features, classes)
    monkeypatch.setattr(cras_torch, "is_exporting", lambda: True)
    torch.testing.assert_close(model.whitened_residuals(features, classes), eager)


@pytest.mark.parametrize("residual", ["whitened", "center_and_whitened"])
def test_whitened_residual_trains_and_scores_and_its_statistics_travel_in_the_state_dict(residual):
    model, _, _ = _whitened_model(residual=residual)
    model.train()
    loss = model.training_loss(torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in [*model.adaptor.parameters(), *model.discriminator.parameters()])
    model.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
    assert out.anomaly_map.shape == (2, 1, 64, 64) and torch.isfinite(out.pred_score).all()
    fresh = CrasModel(**LITE, pre_trained=False, embed_dim=16, residual=residual)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(images).pred_score, out.pred_score)
    # the paper's residual keeps its state-dict keys (old checkpoints load)
    assert not any("position_" in key for key in CrasModel(**LITE, pre_trained=False, embed_dim=16).state_dict())


def test_center_and_whitened_residual_scores_the_feature_beside_both_residuals():
    model, means, _ = _whitened_model(residual="center_and_whitened")
    assert model.discriminator[0].in_features == 3 * means.shape[2]
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        features, _ = model.embed(images)
        adapted = model.adaptor(features)
        classes = model.infer_classes(adapted)
        parts = [adapted, adapted - model.match_centers(adapted, classes), model.whitened_residuals(features, classes)]
        expected = model.discriminator(torch.cat(parts, dim=2).flatten(0, 1)).view(3, -1).amax(dim=1)
        torch.testing.assert_close(model(images).pred_score, expected)
    model.train()
    loss = model.training_loss(images, classes, ["a", "b", "c"])
    loss.backward()
    assert torch.isfinite(loss) and model.discriminator[0].weight.grad is not None


def test_whitened_residual_without_statistics_or_at_another_size_is_one_clear_error():
    empty = CrasModel(**LITE, pre_trained=False, embed_dim=16, residual="whitened")
    with pytest.raises(ValueError, match="fit"):
        empty.whitened_residuals(torch.randn(1, 4, 16), torch.zeros(1, dtype=torch.long))
    model, means, _ = _whitened_model()
    with pytest.raises(ValueError, match="training input size"):
        model.whitened_residuals(torch.randn(1, means.shape[1] + 1, 16), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="residual"):
        CRAS(**LITE, residual="mahalanobis")
    with pytest.raises(ValueError, match="whiten_eps"):
        CRAS(**LITE, residual="whitened", whiten_eps=0.0)


def test_whitened_residual_exports_with_a_dynamic_batch_and_matches_torch(tmp_path):
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    model, _, _ = _whitened_model()
    path = tmp_path / "cras.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        model, (torch.rand(2, 3, 64, 64),), str(path), input_names=["images"], dynamo=True,
        dynamic_shapes={"images": {0: batch}},
    )  # fmt: skip
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    images = torch.rand(5, 3, 64, 64)
    outputs = list(compiled([images.numpy()]).values())
    with torch.no_grad():
        eager = model(images)
    torch.testing.assert_close(torch.from_numpy(outputs[0]), eager.pred_score, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.from_numpy(outputs[1]), eager.anomaly_map, atol=1e-4, rtol=1e-4)


def test_whiten_shrinkage_whitens_by_the_covariance_shrunk_toward_its_average_variance():
    """``whiten_shrinkage`` α: the residual's squared norm is the Mahalanobis distance under
    ``(1 − α) Σ + α (tr Σ / D) I + ε I``; α = 0 is the unshrunk whitening, and a rank-deficient ``Σ`` (fewer
    images than dimensions) no longer has its null directions amplified by ``1 / √ε``."""
    generator = torch.Generator().manual_seed(1)
    dim, positions = 16, 4
    few = torch.randn(1, positions, 5, dim, generator=generator)  # 5 "images": rank 4 < 16
    means = few.mean(dim=2)
    centred = few - means.unsqueeze(2)
    covariances = centred.transpose(-1, -2) @ centred / 4
    offsets = torch.randn(2, positions, dim, generator=generator)
    features, classes = means + offsets, torch.zeros(2, dtype=torch.long)
    norms = {}
    for alpha in (0.0, 0.5):
        model = CrasModel(**LITE, pre_trained=False, embed_dim=dim, residual="whitened", whiten_shrinkage=alpha)
        model.set_position_statistics(means, covariances)
        norms[alpha] = model.whitened_residuals(features, classes).pow(2).sum(dim=2)
        target = covariances.diagonal(dim1=-2, dim2=-1).mean(dim=-1)[..., None, None] * torch.eye(dim)
        used = (1 - alpha) * covariances + alpha * target + model.whiten_eps * torch.eye(dim)
        expected = torch.einsum("bpd,pde,bpe->bp", offsets, torch.linalg.inv(used[0]), offsets)
        torch.testing.assert_close(norms[alpha], expected, rtol=1e-3, atol=1e-3)
    assert (norms[0.5] < norms[0.0] / 10).all(), "shrinkage tames the null directions of a rank-deficient covariance"
    with pytest.raises(ValueError, match="whiten_shrinkage"):
        CRAS(**LITE, residual="whitened", whiten_shrinkage=1.0)


def test_lower_triangular_product_equals_the_dense_product_for_every_band_count():
    generator = torch.Generator().manual_seed(0)
    matrices = torch.randn(6, 40, 40, generator=generator).tril()
    vectors = torch.randn(3, 6, 40, generator=generator)
    dense = torch.einsum("pde,bpe->bpd", matrices, vectors)
    for num_blocks in (1, 2, 3, 7, 8, 40, 100):
        torch.testing.assert_close(lower_triangular_product(matrices, vectors, num_blocks), dense)
    # the blocks right of each band are never read: with one row per band, garbage above the diagonal changes nothing
    garbage = matrices + 1e6 * torch.ones_like(matrices).triu(diagonal=1)
    torch.testing.assert_close(lower_triangular_product(garbage, vectors, num_blocks=40), dense)
    assert not torch.allclose(lower_triangular_product(garbage, vectors, num_blocks=1), dense)
    for wrong_matrices, wrong_vectors in (
        (matrices, vectors[:, :5]),  # positions differ
        (matrices, torch.cat([vectors, vectors], dim=2)),  # longer vectors than the matrices
        (matrices[:, :, :30], vectors[..., :30]),  # not square
    ):
        with pytest.raises(ValueError, match=r"\(P, D, D\)"):
            lower_triangular_product(wrong_matrices, wrong_vectors)


def _whiteners_without_tril(covariances: torch.Tensor, eps: float) -> torch.Tensor:
    """The whiteners as the code before ``.tril()`` computed them: ``L⁻¹`` by forward substitution."""
    eye = torch.eye(covariances.shape[-1])
    factor = torch.linalg.cholesky(covariances + eps * eye)
    return torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)


def test_whitened_residuals_equal_the_dense_product_of_the_lower_triangular_whiteners():
    model, means, covariances = _whitened_model(num_classes=3)
    whiteners = model.position_whiteners
    assert not bool(torch.triu(whiteners, diagonal=1).any())
    # the whiteners as stored before .tril() (inverse Cholesky factors by forward substitution): the same values
    torch.testing.assert_close(whiteners, _whiteners_without_tril(covariances, model.whiten_eps))
    features = torch.randn(5, means.shape[1], means.shape[2])
    classes = torch.tensor([2, 0, 1, 2, 0])
    dense = torch.einsum("bpde,bpe->bpd", whiteners[classes], features - means[classes])
    torch.testing.assert_close(model.whitened_residuals(features, classes), dense, rtol=1e-5, atol=1e-5)


def test_a_state_dict_with_whiteners_that_are_not_lower_triangular_is_refused_and_the_model_kept():
    model, means, covariances = _whitened_model()
    features = torch.randn(2, means.shape[1], means.shape[2])
    classes = torch.tensor([1, 0])
    before = model.whitened_residuals(features, classes)
    # a checkpoint of the earlier code (whiteners without .tril()) loads: forward substitution leaves exact zeros
    state = model.state_dict()
    state["position_whiteners"] = _whiteners_without_tril(covariances, model.whiten_eps)
    model.load_state_dict(state)
    torch.testing.assert_close(model.whitened_residuals(features, classes), before)
    for broken in (
        state["position_whiteners"] + 1e-3 * torch.ones_like(state["position_whiteners"]).triu(diagonal=1),
        state["position_whiteners"][..., :-1],  # not square
        state["position_whiteners"][0],  # not (K, P, D, D)
    ):
        with pytest.raises(BadInputError, match=r"not \(K, P, D, D\) lower-triangular"):
            model.load_state_dict({**state, "position_whiteners": broken})
        torch.testing.assert_close(model.whitened_residuals(features, classes), before)  # nothing was replaced


def test_lower_triangular_product_takes_vectors_with_a_strided_last_dimension():
    generator = torch.Generator().manual_seed(1)
    matrices = torch.randn(6, 24, 24, generator=generator).tril()
    strided = torch.randn(2, 24, 6, generator=generator).transpose(1, 2)  # as features transposed out of a conv
    assert strided.stride(-1) != 1
    dense = torch.einsum("pde,bpe->bpd", matrices, strided)
    torch.testing.assert_close(lower_triangular_product(matrices, strided), dense)


def _fit_whitened(demo_root, work, folds: int, callbacks: list | None = None) -> CRAS:
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_repair import MVTecFolder

    seed_everything(0)
    model = CRAS(
        **LITE, pre_trained=False, embed_dim=16, image_size=64, crop_size=64, residual="whitened",
        whiten_folds=folds, visualizer=False,
    )  # fmt: skip
    datamodule = MVTecFolder(root=demo_root, categories=["disc", "weave"], num_workers=0, train_batch_size=4)
    engine = Engine(
        max_epochs=1, default_root_dir=work, accelerator="cpu", devices=1, logger=False,
        enable_progress_bar=False, callbacks=callbacks or [],
    )  # fmt: skip
    engine.fit(model=model, datamodule=datamodule)
    return model


def test_whiten_folds_trains_on_out_of_fold_statistics_and_tests_on_all_of_them(demo_root, tmp_path):
    """``whiten_folds``: while training, row ``k·F + f`` of the training statistics is category ``k``'s mean over
    the images *outside* fold ``f``, and every training residual is whitened with its own image's row; the
    statistics kept for testing are those of every image (the same as without folds), and the training ones are
    freed after fit."""
    from lightning.pytorch.callbacks import Callback

    seen: dict[str, torch.Tensor] = {}

    class Capture(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            network = pl_module.model
            seen["training_means"] = network.training_means.clone()
            features, classes, folds = [], [], []
            for images, batch in pl_module.iterate_training_images():  # as the statistics were gathered
                paths = [str(p) for p in batch.image_path]
                features.append(network.patch_features(images))
                classes += [0 if "/disc/" in p else 1 for p in paths]
                folds.append(network.fold_of(paths))
            seen["features"] = torch.cat(features)
            seen["classes"] = torch.tensor(classes)
            seen["folds"] = torch.cat(folds)
            # what training whitens an image with: its own (category, fold) row of the out-of-fold statistics
            recorded: list[torch.Tensor] = []
            original = network.whitened_residuals

            def spy(features, classes, statistics=None):
                recorded.append(classes.clone())
                return original(features, classes, statistics)

            network.whitened_residuals = spy
            images, batch = next(iter(pl_module.iterate_training_images()))
            paths = [str(p) for p in batch.image_path]
            network.training_loss(images, pl_module._classes(batch), paths)
            network.whitened_residuals = original
            expected = torch.tensor([0 if "/disc/" in p else 1 for p in paths]) * 2 + network.fold_of(paths)
            seen["rows"] = recorded[0][: len(paths)]
            seen["expected_rows"] = expected

    folded = _fit_whitened(demo_root, tmp_path / "folds", folds=2, callbacks=[Capture()])
    torch.testing.assert_close(seen["rows"], seen["expected_rows"])
    features, classes, folds = seen["features"], seen["classes"], seen["folds"]
    assert set(folds.tolist()) == {0, 1}, "the demo's 16 training images fall into both folds"
    for category in (0, 1):
        for fold in (0, 1):
            outside = (classes == category) & (folds != fold)
            if outside.sum() < 2:  # too few images outside the fold: the category's whole statistics
                outside = classes == category
            torch.testing.assert_close(
                seen["training_means"][category * 2 + fold], features[outside].mean(dim=0), atol=1e-4, rtol=1e-4
            )
    assert folded.model.training_means is None and folded.model.training_whiteners is None
    assert not any("training_" in key for key in folded.state_dict())
    plain = _fit_whitened(demo_root, tmp_path / "plain", folds=0)
    torch.testing.assert_close(folded.model.position_means, plain.model.position_means)
    torch.testing.assert_close(folded.model.position_whiteners, plain.model.position_whiteners, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="whiten_folds"):
        CRAS(**LITE, residual="whitened", whiten_folds=1)


def test_whiten_folds_falls_back_to_whole_statistics_where_fewer_than_two_images_lie_outside_a_fold(monkeypatch):
    """A fold holding all but at most one of its category's images has no usable out-of-fold covariance: that
    (category, fold) row trains with the category's whole statistics; every other row keeps its out-of-fold ones."""
    model = CRAS(**LITE, pre_trained=False, embed_dim=2, residual="whitened", whiten_folds=2, visualizer=False)
    generator = torch.Generator().manual_seed(0)
    # (category, fold) image counts: category 0 has 5 + 1 images, category 1 has 0 + 4
    counts = {(0, 0): 5, (0, 1): 1, (1, 0): 0, (1, 1): 4}
    values = {key: torch.randn(count, 1, 2, generator=generator, dtype=torch.float64) for key, count in counts.items()}
    order = [(0, 0), (0, 1), (1, 0), (1, 1)]  # row k·F + f
    moments = (
        torch.stack([values[key].sum(dim=0) for key in order]),
        torch.stack([torch.einsum("npd,npe->pde", values[key], values[key]) for key in order]),
        torch.tensor([float(counts[key]) for key in order], dtype=torch.float64),
    )
    monkeypatch.setattr(model, "position_moments_per_category", lambda *args: moments)
    model._compute_position_statistics(num_classes=2)

    def mean_of(*keys: tuple[int, int]) -> torch.Tensor:
        return torch.cat([values[key] for key in keys]).mean(dim=0).float()

    training_means = model.model.training_means
    expected = {
        0: mean_of((0, 0), (0, 1)),  # category 0 without fold 0: one image left, so the whole category
        1: mean_of((0, 0)),  # category 0 without fold 1: five images, out-of-fold
        2: mean_of((1, 1)),  # category 1 without fold 0: all four images (fold 0 is empty)
        3: mean_of((1, 0), (1, 1)),  # category 1 without fold 1: none left, so the whole category
    }
    for row, mean in expected.items():
        torch.testing.assert_close(training_means[row], mean)
    assert torch.isfinite(model.model.training_whiteners).all()
    torch.testing.assert_close(model.model.position_means[0], mean_of((0, 0), (0, 1)))
    torch.testing.assert_close(model.model.position_means[1], mean_of((1, 1)))
