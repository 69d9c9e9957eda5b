"""Image-level anomaly synthesis: foreground rule, masks inside the foreground, blend range, seeds, textures."""

from __future__ import annotations

import socket

import pytest
import torch
from torchvision.io import write_png

from anomalib_repair.data.synthesis import AnomalySynthesizer, foreground_mask, grid_shuffle
from anomalib_repair.errors import BadInputError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _object_images(batch: int = 3, size: int = 64) -> torch.Tensor:
    """A bright disc (slightly textured) on a uniform dark-yellow background."""
    torch.manual_seed(0)
    grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).float()
    disc = ((grid - size / 2) ** 2).sum(0) < (size / 4) ** 2
    images = torch.tensor([0.6, 0.5, 0.05]).view(1, 3, 1, 1).repeat(batch, 1, size, size)
    images[:, :, disc] = 0.9 + 0.05 * torch.rand(batch, 3, int(disc.sum()))
    return images


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_foreground_rule_finds_the_object_and_keeps_textures_whole():
    objects = _object_images()
    mask = foreground_mask(objects)
    disc_fraction = torch.pi / 16
    assert mask.shape == (3, 1, 64, 64)
    assert abs(mask.float().mean().item() - disc_fraction) < 0.05
    assert not mask[:, :, 0, 0].any() and mask[:, :, 32, 32].all()
    texture = torch.rand(2, 3, 64, 64)  # no uniform border: whole image
    assert foreground_mask(texture).all()
    flat = torch.full((1, 3, 64, 64), 0.5) + 0.01 * torch.rand(1, 3, 64, 64)  # no distinct object: whole image
    assert foreground_mask(flat).all()


def test_masks_lie_inside_the_foreground_and_outside_pixels_are_untouched():
    images = _object_images(batch=4)
    synthesizer = AnomalySynthesizer()
    damaged, masks = synthesizer(_normalise(images), MEAN, STD, generator=torch.Generator().manual_seed(1))
    foreground = foreground_mask(images)
    assert masks.shape == (4, 1, 64, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all()  # every image gets a defect
    assert not (masks.bool() & ~foreground).any()
    outside = ~masks.bool().expand_as(images)
    torch.testing.assert_close(damaged[outside], _normalise(images)[outside], atol=1e-5, rtol=0)


def test_foreground_off_uses_the_whole_image():
    synthesizer = AnomalySynthesizer(foreground="off")
    assert synthesizer.foreground_masks(_object_images(1)).all()
    with pytest.raises(BadInputError, match="foreground"):
        AnomalySynthesizer(foreground="saliency")


def test_blend_factor_stays_in_its_range(monkeypatch):
    synthesizer = AnomalySynthesizer(foreground="off")
    monkeypatch.setattr(synthesizer, "_source", torch.zeros_like)  # aug = β·img inside
    images = torch.full((8, 3, 32, 32), 0.5)
    damaged, masks = synthesizer(images, generator=torch.Generator().manual_seed(0))
    betas = torch.stack([(d[:, m[0].bool()] / 0.5).mean() for d, m in zip(damaged, masks, strict=True)])
    assert ((betas >= 0.2 - 1e-6) & (betas <= 0.8 + 1e-6)).all(), betas
    assert betas.std() > 0  # drawn per image


def test_same_seed_same_damage_and_global_rng_untouched(tmp_path):
    textures = tmp_path / "textures" / "banded"
    textures.mkdir(parents=True)
    for index in range(2):
        write_png((torch.rand(3, 40, 40) * 255).to(torch.uint8), str(textures / f"t{index}.png"))
    synthesizer = AnomalySynthesizer(texture_dir=tmp_path / "textures")
    images = _normalise(_object_images(batch=4))
    state = torch.random.get_rng_state()
    first = synthesizer(images, MEAN, STD, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    second = synthesizer(images, MEAN, STD, generator=torch.Generator().manual_seed(3))
    other = synthesizer(images, MEAN, STD, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[1], other[1])


def test_empty_or_missing_texture_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(BadInputError, match="holds no images"):
        AnomalySynthesizer(texture_dir=tmp_path / "empty")
    with pytest.raises(BadInputError, match="is not a folder"):
        AnomalySynthesizer(texture_dir=tmp_path / "missing")


def test_nothing_is_downloaded(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    synthesizer = AnomalySynthesizer()
    synthesizer(torch.rand(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))


def test_grid_shuffle_permutes_cells():
    image = torch.arange(64.0).view(1, 8, 8).repeat(3, 1, 1)
    torch.manual_seed(0)
    shuffled = grid_shuffle(image, grid=4)
    assert not torch.equal(shuffled, image)
    cells = lambda x: sorted(x[0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(-1, 4).tolist())  # noqa: E731
    assert cells(shuffled) == cells(image)


def test_foreground_that_no_mask_hits_falls_back_to_an_unrestricted_mask():
    """After ``max_tries`` Perlin draws that miss the foreground, the mask is used unrestricted (never a hang)."""
    synthesizer = AnomalySynthesizer(max_tries=3)
    torch.manual_seed(0)
    nothing = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask = synthesizer._shape(nothing)
    assert mask.any()
    some = torch.zeros(1, 32, 32, dtype=torch.bool)
    some[:, 8:24, 8:24] = True
    restricted = synthesizer._shape(some)
    assert restricted.any() and not restricted[~some[0]].any()  # a reachable foreground keeps the mask inside
