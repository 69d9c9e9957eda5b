"""Unified multi-class datamodules: one model trained on many categories of a per-category anomalib dataset.

anomalib's image datamodules each hold one ``category``. :class:`MultiClassDataModule` builds anomalib's own
per-category datamodule for every requested category (so downloads, folder layouts and splits are exactly
anomalib's), concatenates their datasets, and records in :attr:`MultiClassDataModule.category_index` which
category every image file belongs to (see :mod:`anomalib_repair.data.category`).

Named subclasses fix the dataset: :class:`MVTec`, :class:`VisA`, :class:`MPDD`, :class:`RealIAD`, and
:class:`MVTecFolder` for a folder of the user's own in MVTec AD layout. They stay in this module (over 500 lines
with them): each is a few lines over the base, and their shared argument documentation is built here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib.data import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import Transform

from anomalib_repair.data.category import CategoryIndex
from anomalib_repair.data.eval_halves import TEST_HALVES, half_indices
from anomalib_repair.data.image_cache import DecodedImageCache
from anomalib_repair.data.sampling import ResumableSampler, shard_sampler
from anomalib_repair.data.val_split import validation_indices
from anomalib_repair.data.validation import CheckedItems, check_mvtec_layout, verify_samples
from anomalib_repair.errors import BadInputError, DatasetNotFoundError, UnknownCategoryError

logger = logging.getLogger(__name__)

ALL_CATEGORIES = "all"


def _import_class(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)


class MultiClassDataModule(AnomalibDataModule):
    """Train one model on several categories of an anomalib per-category image dataset.

    Args:
        datamodule_class: anomalib's per-category datamodule, as a class or an import path
            (``"anomalib.data.MVTecAD"``). It must take ``root`` and ``category``.
        root: Dataset root, as for the anomalib datamodule.
        categories: Category names to train on together; ``None`` for every category of the dataset.
        known_categories: The dataset's category names (to validate ``categories`` and expand ``None``);
            ``None`` discovers them as the sub-folders of ``root``.
        dataset_name: Name used in messages and in the results folder.
        download_hint: What to tell a user whose data is missing.
        category_kwargs: Extra arguments for every per-category datamodule (e.g. Real-IAD's ``resolution``).
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        test_split_mode: As in anomalib.
        test_split_ratio: As in anomalib.
        val_split_mode: As in anomalib; the default (``same_as_test``, as anomalib and the papers) fits thresholds
            and normalisation on the test images. ``from_test`` moves ``val_split_ratio`` of **each category's**
            test images, drawn per label folder, into validation (:mod:`anomalib_repair.data.val_split`); with
            ``test_half``, validation is the other half.
        val_split_ratio: Share of each category's test images for ``from_test`` (and anomalib's other modes).
        seed: Seed for the splits (``from_test`` uses 0 when ``None``).
        verify_images: Open and ``verify()`` every image and mask at set-up (about 0.3 ms a file) so that a
            truncated file or a mask of the wrong size fails at once, in one line naming the file.
        test_half: ``None`` (every test image), ``"tune"`` or ``"report"``: keep only that seeded, per-category,
            per-defect-type half of the test images (:mod:`anomalib_repair.data.eval_halves`). Choose settings on
            ``"tune"``, report on ``"report"``.
        test_half_seed: Seed of the two halves.
        cache_images: Keep the decoded training images in memory after their first epoch
            (:mod:`anomalib_repair.data.image_cache`; bit-for-bit the same items, one byte per pixel and channel
            of RAM). Needs deterministic items (no ``train_augmentations``) and ``num_workers=0``.

    Example:
        >>> datamodule = MultiClassDataModule("anomalib.data.MVTecAD", root="./datasets/MVTecAD",
        ...                                   categories=["bottle", "cable"])
        >>> datamodule.category
        'bottle+cable'
    """

    def __init__(
        self,
        datamodule_class: type[AnomalibDataModule] | str = "anomalib.data.MVTecAD",
        root: str | Path = "./datasets/MVTecAD",
        categories: Sequence[str] | None = None,
        known_categories: Sequence[str] | None = None,
        dataset_name: str | None = None,
        download_hint: str = "",
        category_kwargs: dict[str, Any] | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        verify_images: bool = True,
        test_half: str | None = None,
        test_half_seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        if test_half not in {None, *TEST_HALVES}:
            msg = f"test_half must be None, 'tune' or 'report', got '{test_half}'."
            raise BadInputError(msg)
        if cache_images and (train_augmentations is not None or augmentations is not None):
            msg = "cache_images keeps decoded training images, which augmentations would change: drop one of them."
            raise BadInputError(msg)
        if cache_images and num_workers > 0:
            msg = "cache_images holds the images in the main process: set num_workers=0 (or cache_images=False)."
            raise BadInputError(msg)
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.datamodule_class = (
            _import_class(datamodule_class) if isinstance(datamodule_class, str) else datamodule_class
        )
        self.root = Path(root).expanduser()
        self.dataset_name = dataset_name or self.datamodule_class.__name__
        self.download_hint = download_hint
        self.category_kwargs = dict(category_kwargs or {})
        self._known_categories = list(known_categories) if known_categories is not None else None
        if isinstance(categories, str):
            categories = [categories]
        self.requested_categories = list(categories) if categories else None
        if self.requested_categories and self._known_categories is not None:
            self._check_known(self.requested_categories, self._known_categories)
        self.category = self._category_label()
        self.category_index: CategoryIndex | None = None
        self.verify_images = verify_images
        self.test_half = test_half
        self.test_half_seed = test_half_seed
        self.cache_images = cache_images
        self._image_cache: DecodedImageCache | None = None
        self._verified: set[str] = set()
        self._other_half: Any = None  # the test half not evaluated (validation for val_split_mode="from_test")

    # ------------------------------------------------------------------ categories
    @property
    def categories(self) -> list[str]:
        """The categories this datamodule trains on, in index order."""
        if self.requested_categories:
            return list(self.requested_categories)
        return self.known_categories

    @property
    def known_categories(self) -> list[str]:
        """Every category of the dataset (discovered from ``root`` when the dataset has no fixed list)."""
        if self._known_categories is not None:
            return list(self._known_categories)
        return self._discover_categories()

    def _discover_categories(self) -> list[str]:
        if not self.root.is_dir():
            self._raise_missing_root()
        found = sorted(child.name for child in self.root.iterdir() if (child / "train").is_dir())
        if not found:
            msg = (
                f"No categories found in {self.root}: expected sub-folders <category>/train/good "
                f"(MVTec AD layout). {self.download_hint}".strip()
            )
            raise DatasetNotFoundError(msg)
        return found

    def _check_known(self, requested: Sequence[str], known: Sequence[str]) -> None:
        unknown = [name for name in requested if name not in known]
        if unknown:
            msg = (
                f"Unknown {self.dataset_name} categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                f"expected any of: {', '.join(known)}."
            )
            raise UnknownCategoryError(msg)

    def _category_label(self) -> str:
        if not self.requested_categories:
            return ALL_CATEGORIES
        if self._known_categories is not None and sorted(self.requested_categories) == sorted(self._known_categories):
            return ALL_CATEGORIES
        return "+".join(self.requested_categories)

    @property
    def name(self) -> str:  # type: ignore[override]  # anomalib overrides Lightning's ``name`` attribute the same way
        """Dataset name, used for the results folder (``results/<model>/<name>/<category>``)."""
        return self.dataset_name

    # ------------------------------------------------------------------ per-category anomalib datamodules
    def _category_datamodule(self, category: str) -> AnomalibDataModule:
        return self.datamodule_class(
            root=self.root,
            category=category,
            train_batch_size=self.train_batch_size,
            eval_batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            test_split_mode=TestSplitMode.NONE,
            val_split_mode=ValSplitMode.NONE,
            **self.category_kwargs,
        )

    @property
    def _mvtec_layout(self) -> bool:
        return self.datamodule_class.__name__ == "MVTecAD"

    def _raise_missing_root(self) -> None:
        msg = f"{self.dataset_name} dataset root not found: {self.root}. {self.download_hint}".strip()
        raise DatasetNotFoundError(msg)

    def prepare_data(self) -> None:
        """Download missing categories where anomalib can; otherwise fail with one line saying how to get them."""
        if self.requested_categories is None and self._known_categories is None:
            self._discover_categories()
        for category in self.categories:
            try:
                self._category_datamodule(category).prepare_data()
            except (DatasetNotFoundError, UnknownCategoryError):
                raise
            except Exception as error:  # noqa: BLE001 - download/IO errors of many kinds
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                msg = (
                    f"{self.dataset_name} category '{category}' is missing under {self.root} and could not be "
                    f"prepared ({type(error).__name__}: {first_line[:160]}). {self.download_hint}"
                ).strip()
                raise DatasetNotFoundError(msg) from None

    def _setup(self, _stage: str | None = None) -> None:
        if not self.root.is_dir():
            self._raise_missing_root()
        train_sets, test_sets = [], []
        path_to_category: dict[str, str] = {}
        for category in self.categories:
            datamodule = self._category_datamodule(category)
            if self._mvtec_layout:
                check_mvtec_layout(self.root / category)
            try:
                datamodule._setup()  # noqa: SLF001 - anomalib's documented per-subclass hook
            except BadInputError:
                raise
            except (FileNotFoundError, RuntimeError, ValueError) as error:
                detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
                msg = (
                    f"Cannot read {self.dataset_name} category '{category}' under {self.root} "
                    f"({type(error).__name__}: {detail}). {self.download_hint}"
                ).strip()
                raise DatasetNotFoundError(msg) from None
            train, test = datamodule.train_data, datamodule.test_data
            if len(train) == 0:
                msg = (
                    f"{self.dataset_name} category '{category}' has no training images under {self.root}: "
                    "add normal images (MVTec AD layout: <category>/train/good/*.png) or leave the category out."
                )
                raise DatasetNotFoundError(msg)
            for dataset in (train, test):
                path_to_category.update(dict.fromkeys(dataset.samples["image_path"].astype(str), category))
            train_sets.append(train)
            test_sets.append(test)
        self.train_data = _concatenate(train_sets)
        self.test_data = _concatenate(test_sets)
        self._other_half = None
        if self.test_half is not None:
            samples = self.test_data.samples
            names = [path_to_category[path] for path in samples["image_path"].astype(str)]
            keep = half_indices(names, samples["label"].astype(str).tolist(), self.test_half, self.test_half_seed)
            other = sorted(set(range(len(samples))) - set(keep))
            self._other_half = self.test_data.subsample(other)
            self.test_data = self.test_data.subsample(keep)
        if self.verify_images:
            for dataset in (self.train_data, self.test_data, self._other_half):
                if dataset is not None:
                    verify_samples(dataset.samples, self._verified)
        self.category_index = CategoryIndex(self.categories, path_to_category)
        logger.info(
            "%s: %d categories, %d training and %d test images.",
            self.dataset_name,
            len(self.categories),
            len(self.train_data),
            len(self.test_data),
        )

    def _create_val_split(self) -> None:
        """``from_test``: per category, stratified and seeded (:mod:`anomalib_repair.data.val_split`).

        With ``test_half`` set, validation is the other half of the test images (thresholds from ``tune`` when
        reporting on ``report``). Every other mode is anomalib's.
        """
        if ValSplitMode(self.val_split_mode) != ValSplitMode.FROM_TEST:
            super()._create_val_split()
            return
        if self._other_half is not None:
            self.val_data = self._other_half
            return
        assert self.category_index is not None
        samples = self.test_data.samples
        names = self.category_index.names_of(samples["image_path"].astype(str))
        labels = samples["label"].astype(str).tolist()
        chosen = validation_indices(names, labels, self.val_split_ratio, 0 if self.seed is None else self.seed)
        rest = sorted(set(range(len(samples))) - set(chosen))
        self.val_data = self.test_data.subsample(chosen)
        self.test_data = self.test_data.subsample(rest)

    # ------------------------------------------------------------------ data loaders
    def train_dataloader(self) -> DataLoader:
        """Shuffled per epoch from the seed, resumable mid-epoch, one shard per process under DDP.

        The loaders have their own generators: starting an epoch draws nothing from the global random stream,
        which the models' synthetic anomalies use (so a resumed run continues that stream exactly).
        """
        dataset: Any = self.train_data
        if self.cache_images:  # one cache per training set (a subclass may replace train_data after set-up)
            if self._image_cache is None or self._image_cache.dataset is not self.train_data:
                self._image_cache = DecodedImageCache(self.train_data)
            dataset = self._image_cache
        sampler = ResumableSampler.for_trainer(
            dataset, getattr(self, "trainer", None), self.train_batch_size, seed=self.seed
        )
        return DataLoader(
            dataset=CheckedItems(dataset),
            sampler=sampler,
            generator=torch.Generator().manual_seed(sampler.seed + sampler.epoch),
            batch_size=self.train_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.external_collate_fn or self.train_data.collate_fn,
        )

    def _eval_dataloader(self, dataset: Any) -> DataLoader:
        return DataLoader(
            dataset=CheckedItems(dataset),
            sampler=shard_sampler(dataset, getattr(self, "trainer", None)),
            shuffle=False,
            generator=torch.Generator().manual_seed(0),
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=self.external_collate_fn or dataset.collate_fn,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation images in order; under DDP each process gets its share, every image exactly once."""
        return self._eval_dataloader(self.val_data)

    def test_dataloader(self) -> DataLoader:
        """Test images in order; under DDP each process gets its share, every image exactly once."""
        return self._eval_dataloader(self.test_data)


def _concatenate(datasets: list[Any]) -> Any:
    combined = datasets[0]
    for dataset in datasets[1:]:
        combined = combined + dataset
    return combined


def _categories_of(module_path: str) -> tuple[str, ...]:
    return tuple(importlib.import_module(module_path).CATEGORIES)


_SHARED_DOC = """
    Args:
        root: Dataset root (anomalib's default location when not given).
        categories: Category names to train together; ``None`` for all of them.
        train_batch_size: Training batch size.
        eval_batch_size: Validation and test batch size.
        num_workers: Data loader workers.
        train_augmentations: Augmentations for training images.
        val_augmentations: Augmentations for validation images.
        test_augmentations: Augmentations for test images.
        augmentations: Augmentations for every split without its own.
        test_split_mode: As in anomalib.
        test_split_ratio: As in anomalib.
        val_split_mode: As in anomalib (``same_as_test`` by default); ``from_test`` carves a seeded, stratified share of
            each category's test images for validation (with ``test_half``: the other half).
        val_split_ratio: Share of each category's test images that ``from_test`` moves to validation.
        seed: Seed for the splits.
        category_kwargs: Extra arguments for every per-category anomalib datamodule.
        verify_images: Open and ``verify()`` every image and mask at set-up so that a bad file fails at once.
        test_half: ``None``, ``"tune"`` or ``"report"``: only that seeded per-category half of the test images.
        test_half_seed: Seed of the two halves.
        cache_images: Keep decoded training images in memory after the first epoch (same items; needs
            ``num_workers=0`` and no training augmentations).
"""


class _NamedMultiClass(MultiClassDataModule):
    """Base of the named datamodules: fixes the anomalib class, the categories and the download hint."""

    anomalib_class: str
    categories_module: str | None
    hint: str

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str] | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        category_kwargs: dict[str, Any] | None = None,
        verify_images: bool = True,
        test_half: str | None = None,
        test_half_seed: int = 0,
        cache_images: bool = False,
    ) -> None:
        super().__init__(
            datamodule_class=self.anomalib_class,
            root=root,
            categories=categories,
            known_categories=_categories_of(self.categories_module) if self.categories_module else None,
            dataset_name=type(self).__name__,
            download_hint=self.hint,
            category_kwargs=category_kwargs,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
            verify_images=verify_images,
            test_half=test_half,
            test_half_seed=test_half_seed,
            cache_images=cache_images,
        )


class MVTec(_NamedMultiClass):  # noqa: D101 - documented below
    anomalib_class = "anomalib.data.MVTecAD"
    categories_module = "anomalib.data.datasets.image.mvtecad"
    hint = (
        "anomalib downloads MVTec AD when the network allows; otherwise get it from "
        "https://www.mvtec.com/company/research/datasets/mvtec-ad and pass --data.root PATH."
    )

    def __init__(self, root: str | Path = "./datasets/MVTecAD", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)


class VisA(_NamedMultiClass):  # noqa: D101
    anomalib_class = "anomalib.data.Visa"
    categories_module = "anomalib.data.datasets.image.visa"
    hint = (
        "anomalib downloads and splits VisA when the network allows; otherwise get VisA_20220922.tar from "
        "https://github.com/amazon-science/spot-diff, put it in the root and pass --data.root PATH."
    )

    def __init__(self, root: str | Path = "./datasets/visa", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)


class MPDD(_NamedMultiClass):  # noqa: D101
    anomalib_class = "anomalib.data.MPDD"
    categories_module = "anomalib.data.datasets.image.mpdd"
    hint = (
        "MPDD is not downloaded automatically: get it from https://github.com/stepanje/MPDD and pass --data.root PATH."
    )

    def __init__(self, root: str | Path = "./datasets/MPDD", **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)


class RealIAD(_NamedMultiClass):  # noqa: D101
    anomalib_class = "anomalib.data.RealIAD"
    categories_module = "anomalib.data.datasets.image.realiad"
    hint = (
        "Real-IAD is not downloaded automatically: request it at https://realiad4ad.github.io/Real-IAD/ "
        "and pass --data.root PATH."
    )

    def __init__(self, root: str | Path = "./datasets/Real-IAD", **kwargs: Any) -> None:
        kwargs.setdefault("test_split_mode", TestSplitMode.NONE)
        super().__init__(root=root, **kwargs)


class MVTecFolder(_NamedMultiClass):  # noqa: D101
    anomalib_class = "anomalib.data.MVTecAD"
    categories_module = None
    hint = (
        "Expected the MVTec AD layout: <root>/<category>/train/good/*.png, <root>/<category>/test/<defect>/*.png and "
        "<root>/<category>/ground_truth/<defect>/<name>_mask.png."
    )

    def __init__(self, root: str | Path, **kwargs: Any) -> None:
        super().__init__(root=root, **kwargs)

    def prepare_data(self) -> None:
        """Check the folder (nothing is downloaded for a folder of the user's own)."""
        known = self._discover_categories()
        if self.requested_categories:
            self._check_known(self.requested_categories, known)
        for category in self.categories:
            if not (self.root / category / "train").is_dir():
                msg = f"{self.root / category / 'train'} not found. {self.hint}"
                raise DatasetNotFoundError(msg)


for _cls, _title in (
    (MVTec, "MVTec AD (15 categories)"),
    (VisA, "VisA (12 categories)"),
    (MPDD, "MPDD (6 categories)"),
    (RealIAD, "Real-IAD (30 categories)"),
    (MVTecFolder, "a folder of your own in MVTec AD layout (categories are its sub-folders)"),
):
    _cls.__doc__ = f"Unified multi-class datamodule for {_title}.\n{_SHARED_DOC}"
