"""Bad input: every messy-folder case fails in one line naming the file, or just works as in anomalib.

Cases already covered elsewhere (not repeated here): missing dataset root, unknown category and a category without
training images (tests/unit/test_multiclass_data.py), offline without backbone weights (tests/unit/test_backbone.py),
missing root through the CLI (tests/integration/test_cli.py).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything
from PIL import Image

from anomalib_repair import MVTecFolder
from anomalib_repair.data.validation import verify_samples
from anomalib_repair.errors import AnomalibRepairError, BadInputError, one_line
from tiny_models import TINY_MODELS


def assert_one_line(error: pytest.ExceptionInfo, *needles: str) -> str:
    message = str(error.value)
    assert isinstance(error.value, AnomalibRepairError)
    assert message and "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


@pytest.fixture
def messy_root(tmp_path: Path, demo_root: Path) -> Path:
    """A writable copy of two demo categories (disc, weave)."""
    root = tmp_path / "data"
    for name in ("disc", "weave"):
        shutil.copytree(demo_root / name, root / name)
    return root


def _datamodule(root: Path, **kwargs) -> MVTecFolder:
    return MVTecFolder(root=root, num_workers=0, train_batch_size=4, eval_batch_size=4, **kwargs)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _first_defect(root: Path, category: str = "disc") -> tuple[Path, Path]:
    defect = sorted(p for p in (root / category / "test").iterdir() if p.name != "good")[0]
    image = sorted(defect.glob("*.png"))[0]
    return image, root / category / "ground_truth" / defect.name / f"{image.stem}_mask.png"


# ---------------------------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("damage", ["truncated", "empty", "not_an_image"])
def test_unreadable_training_image_fails_at_setup_naming_it(messy_root, damage):
    bad = sorted((messy_root / "weave" / "train" / "good").glob("*.png"))[3]
    if damage == "truncated":
        _truncate(bad)
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        bad.write_text("this is a text file with a .png name")
    datamodule = _datamodule(messy_root)
    with pytest.raises(BadInputError) as error:
        datamodule.setup()
    assert_one_line(error, str(bad), "replace or remove")


def test_truncated_image_without_up_front_check_fails_when_loaded_naming_it(messy_root):
    bad = sorted((messy_root / "disc" / "test" / "good").glob("*.png"))[0]
    _truncate(bad, keep=0.6)
    datamodule = _datamodule(messy_root, verify_images=False)
    datamodule.setup()
    position = list(datamodule.test_data.samples.image_path).index(str(bad))
    loaded = datamodule.test_dataloader().dataset  # what the loaders read
    loaded[position - 1 if position else position + 1]  # its neighbours still load
    with pytest.raises(BadInputError) as error:
        loaded[position]
    assert_one_line(error, str(bad))
    with pytest.raises(BadInputError):  # the whole loader, as a run reads it
        list(datamodule.test_dataloader())
    # the checked items survive pickling (spawned loader workers, ddp_spawn) and deep copies
    restored = pickle.loads(pickle.dumps(loaded))
    with pytest.raises(BadInputError):
        restored[position]
    assert type(datamodule.test_data).__module__.startswith("anomalib.")  # the datamodule keeps anomalib's class


def test_worker_traceback_message_is_reduced_to_its_last_line():
    wrapped = BadInputError(
        "Caught BadInputError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\nanomalib_repair.errors.BadInputError: Cannot read image /d/a.png (x): fix.\n'
    )
    assert one_line(wrapped) == "Cannot read image /d/a.png (x): fix."
    assert one_line(BadInputError("plain message")) == "plain message"


# ---------------------------------------------------------------------------------------------- masks
def test_mask_of_another_size_fails_at_setup_naming_both_files(messy_root):
    image, mask = _first_defect(messy_root)
    Image.open(mask).resize((40, 30)).save(mask)
    with pytest.raises(BadInputError) as error:
        _datamodule(messy_root).setup()
    assert_one_line(error, str(mask), str(image), "40x30", "64x64")


def test_mask_without_image_fails_naming_the_mask(messy_root):
    image, mask = _first_defect(messy_root)
    image.unlink()
    with pytest.raises(BadInputError) as error:
        _datamodule(messy_root).setup()
    assert_one_line(error, str(mask), "no matching image", str(image))


def test_mask_without_image_while_the_counts_still_match_is_caught(messy_root):
    # anomalib pairs sorted lists: an extra image elsewhere hides the missing one from a count check.
    image, _mask = _first_defect(messy_root)
    shutil.copy(image, image.with_name("zz_extra.png"))
    image.unlink()
    with pytest.raises(BadInputError) as error:
        _datamodule(messy_root).setup()
    assert_one_line(error, "zz_extra.png", "has no mask")


def test_anomalous_image_without_mask_fails_naming_the_expected_mask(messy_root):
    image, mask = _first_defect(messy_root, "weave")
    mask.unlink()
    with pytest.raises(BadInputError) as error:
        _datamodule(messy_root).setup()
    assert_one_line(error, str(image), str(mask))


# ---------------------------------------------------------------------------------------------- formats and sizes
def _mix_formats_and_sizes(root: Path) -> dict[str, Path]:
    """Turn some disc images into grayscale, RGBA and very differently sized (non-square) files."""
    train = sorted((root / "disc" / "train" / "good").glob("*.png"))
    gray, rgba, big, small = train[0], train[1], train[2], train[3]
    Image.open(gray).convert("L").save(gray)
    rgb = Image.open(rgba).convert("RGB")
    alpha = Image.new("L", rgb.size, 128)
    Image.merge("RGBA", (*rgb.split(), alpha)).save(rgba)
    Image.open(big).resize((300, 120)).save(big)
    Image.open(small).resize((17, 23)).convert("L").save(small)
    image, mask = _first_defect(root)  # an anomalous test image with its mask at another size, both resized
    Image.open(image).resize((256, 256)).convert("RGBA").save(image)
    Image.open(mask).resize((256, 256), Image.NEAREST).save(mask)
    return {"gray": gray, "rgba": rgba, "big": big, "small": small, "test": image}


def test_grayscale_rgba_and_mixed_sizes_load_as_rgb(messy_root):
    files = _mix_formats_and_sizes(messy_root)
    datamodule = _datamodule(messy_root)
    datamodule.setup()
    paths = list(datamodule.train_data.samples.image_path)
    for name in ("gray", "rgba", "big", "small"):
        item = datamodule.train_data[paths.index(str(files[name]))]
        assert item.image.shape[0] == 3, name
        expected = np.asarray(Image.open(files[name]).convert("RGB"), dtype=np.float32) / 255
        torch.testing.assert_close(item.image, torch.from_numpy(expected).permute(2, 0, 1))
    gray = datamodule.train_data[paths.index(str(files["gray"]))].image
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    test_paths = list(datamodule.test_data.samples.image_path)
    item = datamodule.test_data[test_paths.index(str(files["test"]))]
    assert item.image.shape == (3, 256, 256)
    assert item.gt_mask.shape == (256, 256) and item.gt_mask.any()


def test_image_check_opens_every_real_file_once(real_data_root):
    """Every image and mask of the real data is verified once; a second pass over the same paths opens none.

    What the check costs per file is a benchmark (``benchmarks/reliability.py --part image-check``), not a test.
    """
    datamodule = MVTecFolder(root=real_data_root, num_workers=0, verify_images=False)
    datamodule.setup()
    tables = [datamodule.train_data.samples, datamodule.test_data.samples]
    files = {str(path) for table in tables for path in table.image_path}
    masks = [path for table in tables if "mask_path" in table for path in table.mask_path]
    files |= {path for path in masks if isinstance(path, str) and path}  # what the checker counts as a mask
    checked: set[str] = set()
    count = sum(verify_samples(table, checked) for table in tables)
    assert count == len(files) >= 1800
    assert checked == files
    assert sum(verify_samples(table, checked) for table in tables) == 0


# ---------------------------------------------------------------------------------------------- in training
class _PoisonImages(Callback):
    """Turns the training images into NaN, as a broken augmentation would."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        batch.image.fill_(float("nan"))


class _Diverge(Callback):
    """After the first step, sets the trainable weights to NaN, as a diverging optimisation would."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    if parameter.requires_grad:
                        parameter.fill_(float("nan"))


def _engine(work: Path, callbacks: list | None = None) -> Engine:
    return Engine(
        max_epochs=1,
        default_root_dir=work,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        callbacks=callbacks or [],
    )


@pytest.mark.parametrize("fault", [_PoisonImages, _Diverge])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_nan_loss_stops_training_with_one_line(name, fault, tmp_path, demo_root):
    seed_everything(0)
    datamodule = MVTecFolder(root=demo_root, categories=["disc"], num_workers=0, train_batch_size=4)
    engine = _engine(tmp_path, [fault()])
    with pytest.raises(AnomalibRepairError) as error:
        engine.fit(model=TINY_MODELS[name](visualizer=False), datamodule=datamodule)
    if fault is _PoisonImages:  # names the images and where to look
        assert_one_line(error, "NaN", str(demo_root / "disc" / "train" / "good"), "check those files")
    else:  # says what to change
        assert_one_line(error, "NaN", "lower", "check the input images")


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_training_on_a_messy_folder_just_works(name, messy_root, tmp_path):
    """Grayscale, RGBA and very differently sized images (and a resized mask) train and test as in anomalib."""
    _mix_formats_and_sizes(messy_root)
    seed_everything(0)
    datamodule = _datamodule(messy_root)
    model = TINY_MODELS[name](visualizer=False)
    engine = _engine(tmp_path)
    engine.fit(model=model, datamodule=datamodule)
    results = engine.test(model=model, datamodule=datamodule, verbose=False)[0]
    assert model.evaluator.last_counts == {"disc": 10, "weave": 10}
    for key in ("image_AUROC", "pixel_AUROC"):
        assert 0.0 <= results[key] <= 1.0, (key, results[key])


def test_empty_texture_folder_stops_training_with_one_line_naming_it(tmp_path, demo_root):
    """CRR's anomaly synthesis with a texture folder that holds no images (the folder is read when fit starts)."""
    empty = tmp_path / "textures"
    empty.mkdir()
    datamodule = MVTecFolder(root=demo_root, categories=["disc"], num_workers=0, train_batch_size=4)
    model = TINY_MODELS["CRR"](synthesis={"texture_dir": str(empty)}, visualizer=False)
    with pytest.raises(BadInputError) as error:
        _engine(tmp_path).fit(model=model, datamodule=datamodule)
    assert_one_line(error, str(empty), "texture_dir=None")
