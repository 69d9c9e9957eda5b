"""What every model of this package shares on top of anomalib's ``AnomalibModule``.

The models stay *direct* ``AnomalibModule`` subclasses (so anomalib's ``list_models``/``get_model`` find them);
this mixin is listed before ``AnomalibModule`` in their bases and adds:

- the input pipeline: resize, center-crop and normalise with the backbone's own mean and std;
- the per-category evaluator (:class:`~anomalib_repair.evaluation.PerCategoryEvaluator`) and per-category
  post-processor (:class:`~anomalib_repair.evaluation.PerCategoryPostProcessor`) as defaults, and a ``forward``
  (what exported models run) that applies each image's own category's thresholds, the category inferred by the
  torch model's ``predict``;
- anomalib's contract that every model here fulfils alike: one-class learning, no sanity validation (thresholds
  need a trained model; the trainer's step and epoch limits are the user's), a validation step that scores the
  batch with the torch model;
- backbone weights resolved when ``fit``/``validate``/``test``/``predict`` starts (never at construction), after
  Lightning restored any checkpoint (which carries them, so nothing is fetched then);
- a checkpoint's saved arguments rebuild a default-constructed model before its weights load (checkpoint-only
  ``anomalib test|predict --ckpt_path``), those of an earlier release first renamed by the model;
- the category index of the running datamodule (:mod:`anomalib_repair.data.category`);
- interruption safety (:mod:`anomalib_repair.callbacks`): atomic checkpoint files, per-rank random streams under
  DDP and random states saved in checkpoints (the :class:`~anomalib_repair.callbacks.TrainingState` callback).

Longer than the ~400 lines of the other modules because it is one mixin: each item above is a Lightning or anomalib
hook of the same class (split across modules, the hooks of one ``RepairModuleMixin`` would be harder to follow),
and the per-category statistics passes every model's training uses share its data iteration.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from anomalib import LearningType
from anomalib.data import Batch, InferenceBatch
from anomalib.metrics import Evaluator
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import CenterCrop, Compose, Normalize, Resize

from anomalib_repair.callbacks import install_atomic_checkpoint_io, model_callbacks
from anomalib_repair.components.backbone import backbone_normalization, load_backbone_weights
from anomalib_repair.components.category_prototypes import CategoryPrototypes
from anomalib_repair.components.exportable_resize import exportable_transform
from anomalib_repair.data.category import CategoryIndex, batch_category_indices, category_index_for
from anomalib_repair.data.sampling import shard_sampler
from anomalib_repair.errors import BadInputError
from anomalib_repair.evaluation import PerCategoryEvaluator, PerCategoryPostProcessor
from anomalib_repair.quiet_logs import EXPORT_LOGGERS, quieter
from anomalib_repair.visualization import CategoryImageVisualizer

COMPONENTS = ("pre_processor", "post_processor", "evaluator", "visualizer")
"""anomalib's components: built by the running command, never replaced from a checkpoint's arguments."""

# torch's ONNX exporter implements opset >= 18 only; anomalib asks for 14, and the down-conversion fails on
# Resize/Pad with a logged traceback (the file then stays at 18 anyway). Exporting at 18 directly is clean.
ONNX_OPSET = 18

logger = logging.getLogger(__name__)

CATEGORY_KEY = "anomalib_repair_categories"
"""Checkpoint entry with the category names a unified model was trained on (the order of its category indices)."""

RESIZE_MODES = ("square", "shorter_side")
"""``"square"``: every image to ``image_size × image_size`` (aspect ratio not kept); ``"shorter_side"``: the shorter
side to ``image_size``, the aspect ratio kept (torchvision's ``Resize(int)``, the CRAS/GLASS authors' pipeline)."""


def _differences(differing: dict[str, tuple[Any, Any]]) -> list[str]:
    """``name=saved (given given)`` for each differing argument; an option group (a dict) names its own options."""
    lines = []
    for key, (given, saved) in differing.items():
        if isinstance(given, dict) and isinstance(saved, dict):
            lines += [
                f"{key}.{option}={saved.get(option)!r} (given {given.get(option)!r})"
                for option in dict.fromkeys([*saved, *given])
                if saved.get(option) != given.get(option)
            ]
        else:
            lines.append(f"{key}={saved!r} (given {given!r})")
    return lines


class RepairPreProcessor(PreProcessor):
    """The pre-processor of anomalib, whose exported graph here resizes with antialiasing as training and testing did.

    anomalib exports ``Resize(antialias=True)`` without antialiasing; here the export transform keeps it
    (:func:`~anomalib_repair.components.exportable_resize.exportable_transform`), so a deployed model given an image
    of any size sees the pixels the validated model saw.
    """

    def __init__(self, transform: Any = None) -> None:
        super().__init__(transform=transform)
        self.export_transform = exportable_transform(self.transform)

    def load_checkpoint_config(self, config: dict[str, Any]) -> None:
        """Restore as anomalib does, then the antialiased export transform again."""
        super().load_checkpoint_config(config)
        self.export_transform = exportable_transform(self.transform)


def build_pre_processor(
    backbone: str, image_size: int, crop_size: int | None, resize_mode: str = "square"
) -> PreProcessor:
    """Resize to ``image_size`` (see :data:`RESIZE_MODES`), center-crop to ``crop_size``, normalise for the backbone.

    With ``resize_mode="shorter_side"`` a crop is required (it makes every image the same, square size).
    """
    if resize_mode not in RESIZE_MODES:
        msg = f"resize_mode must be one of {', '.join(RESIZE_MODES)}, got '{resize_mode}'."
        raise BadInputError(msg)
    if resize_mode == "shorter_side" and crop_size is None:
        msg = (
            "resize_mode='shorter_side' keeps the aspect ratio, so it needs a crop_size (or use resize_mode='square')."
        )
        raise BadInputError(msg)
    mean, std = backbone_normalization(backbone)
    size: int | tuple[int, int] = image_size if resize_mode == "shorter_side" else (image_size, image_size)
    steps: list[Any] = [Resize(size, antialias=True)]
    if crop_size is not None and (crop_size != image_size or resize_mode == "shorter_side"):
        steps.append(CenterCrop((crop_size, crop_size)))
    steps.append(Normalize(mean=list(mean), std=list(std)))
    return RepairPreProcessor(transform=Compose(steps))


def pre_processor_normalization(pre_processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` of the ``Normalize`` in a pre-processor's transform, ``None`` when it has none.

    Looks through nested ``Compose`` transforms; with several ``Normalize`` steps the last one wins only if it is
    the only one (two are refused: the images' scale would be their composition).
    """
    transform = getattr(pre_processor, "transform", None)
    found: list[Normalize] = []
    pending = [transform] if transform is not None else []
    while pending:
        step = pending.pop(0)
        if isinstance(step, Normalize):
            found.append(step)
        pending = list(getattr(step, "transforms", [])) + pending
    if not found:
        return None
    if len(found) > 1:
        msg = "The pre-processor normalises twice: keep one Normalize so the model can undo it for synthesis."
        raise BadInputError(msg)
    return tuple(float(v) for v in found[0].mean), tuple(float(v) for v in found[0].std)


def batch_inputs(batch: Batch) -> tuple[torch.Tensor, list[str]]:
    """The images and image paths of a training batch (both are required by training steps)."""
    images = getattr(batch, "image", None)
    paths = getattr(batch, "image_path", None)
    if images is None or paths is None:
        msg = "Training batches need `image` and `image_path`: use an anomalib image datamodule."
        raise ValueError(msg)
    return images, [paths] if isinstance(paths, str) else list(paths)


def _cli_name(model: Any) -> str:
    """The model's name for anomalib's CLI (``anomalib_repair.CRAS``)."""
    return f"anomalib_repair.{type(model).__name__}"


def _validate_this_epoch(trainer: Any) -> None:
    """Let the current epoch's validation run whatever ``check_val_every_n_epoch`` says (training ends in it).

    Thresholds, normalisation and the checkpoint come from validation: a fit that ends in an epoch that
    ``check_val_every_n_epoch`` skips would end with none of them (or with stale ones from an earlier epoch).
    """
    every = trainer.check_val_every_n_epoch
    if every is not None and every > 1 and (trainer.current_epoch + 1) % every != 0:
        logger.info(
            "Training ends in epoch %d, which check_val_every_n_epoch=%d skips: validating it anyway (thresholds "
            "and the checkpoint come from validation).",
            trainer.current_epoch + 1,
            every,
        )
        trainer.check_val_every_n_epoch = 1


class RepairModuleMixin:
    """Shared behaviour of CRR, MFRNet and CRAS (see the module docstring)."""

    model: torch.nn.Module
    category_names: list[str]

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation (thresholds need a trained model); never sets max_epochs or max_steps."""
        return {"num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """Every model here learns from normal images only (anomalies, where needed, are synthesised)."""
        return LearningType.ONE_CLASS

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the validation batch with the torch model (anomalib computes thresholds from it)."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Per-category image and pixel metrics with their mean (see :class:`PerCategoryEvaluator`)."""
        return PerCategoryEvaluator()

    @staticmethod
    def configure_post_processor() -> PerCategoryPostProcessor:
        """Anomalib's post-processing with thresholds and normalisation per category (one set for one category)."""
        return PerCategoryPostProcessor()

    def forward(self, batch: torch.Tensor, *args: Any, **kwargs: Any) -> InferenceBatch:
        """Pre-process, score and post-process raw images: what exported and ``TorchInferencer`` models run.

        With the per-category post-processor and a model trained on named categories, each image gets the
        thresholds and normalisation of the category the torch model infers for it (``self.model.predict``);
        otherwise this is anomalib's ``forward``.
        """
        del args, kwargs
        pre, post = getattr(self, "pre_processor", None), getattr(self, "post_processor", None)
        images = pre(batch) if pre else batch
        names = list(getattr(self, "category_names", []))
        if isinstance(post, PerCategoryPostProcessor) and len(post.categories) and names:
            predictions, categories = self.model.predict(images)  # type: ignore[operator]
            return post.forward_for_categories(predictions, categories, names)
        predictions = self.model(images)
        return post(predictions) if post else predictions  # type: ignore[no-any-return]

    @classmethod
    def configure_visualizer(cls) -> CategoryImageVisualizer:
        """Anomalib's image visualizer, saving pictures under one folder per category."""
        return CategoryImageVisualizer()

    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        """Anomalib's component callbacks plus :class:`~anomalib_repair.callbacks.TrainingState`."""
        return model_callbacks(super().configure_callbacks())  # type: ignore[misc]

    def setup(self, stage: str) -> None:
        """Make the trainer write checkpoint files atomically (see ``callbacks.AtomicCheckpointIO``)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None:
            install_atomic_checkpoint_io(trainer)
        super().setup(stage)  # type: ignore[misc]

    # Backbone weights are resolved when a command starts, after Lightning restored any checkpoint (which carries
    # them, so nothing is fetched then): ``setup`` runs before the restore and cannot know the checkpoint.
    def on_fit_start(self) -> None:
        """Resolve the backbone's pretrained weights unless a restored checkpoint brought them."""
        load_backbone_weights(self)  # type: ignore[arg-type]
        super().on_fit_start()  # type: ignore[misc]

    def on_validation_start(self) -> None:
        """As :meth:`on_fit_start` (``validate`` without a fit)."""
        load_backbone_weights(self)  # type: ignore[arg-type]
        super().on_validation_start()  # type: ignore[misc]

    def on_test_start(self) -> None:
        """As :meth:`on_fit_start`."""
        load_backbone_weights(self)  # type: ignore[arg-type]
        super().on_test_start()  # type: ignore[misc]

    def on_predict_start(self) -> None:
        """As :meth:`on_fit_start`."""
        load_backbone_weights(self)  # type: ignore[arg-type]
        super().on_predict_start()  # type: ignore[misc]

    @classmethod
    def upgrade_saved_arguments(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's saved arguments in the model's current form (renamed options; here: unchanged)."""
        return dict(saved)

    def adopt_checkpoint_configuration(
        self, checkpoint: dict[str, Any], source: str = ""
    ) -> dict[str, tuple[Any, Any]]:
        """Rebuild the network as the checkpoint's saved hyperparameters describe it, before its weights load.

        ``anomalib test|predict --model anomalib_repair.CRAS --ckpt_path CK`` constructs the model with its default
        arguments (e.g. the paper's backbone) and only then loads ``CK``; so do ``Engine().test(model=CRAS(),
        ckpt_path=CK)`` and a resumed fit. When the checkpoint was trained with other arguments, the network, the
        pre-processing and every configured value are taken from a model built with the checkpoint's arguments
        (nothing is downloaded: backbone weights come from the checkpoint's state dict). Called from
        :meth:`on_load_checkpoint`, which Lightning runs before loading the state dict. Returns the arguments that
        differed, ``{name: (given, saved)}``; one warning line names them (for option groups, the options that
        differ). Saved arguments of an earlier release are first brought to the current form
        (:meth:`upgrade_saved_arguments`: e.g. CRR's flat options into its option groups).
        """
        saved = {key: value for key, value in checkpoint.get("hyper_parameters", {}).items() if key not in COMPONENTS}
        saved = self.upgrade_saved_arguments(saved)
        current = dict(getattr(self, "hparams", {}))
        differing = {key: (current.get(key), value) for key, value in saved.items() if current.get(key) != value}
        if not differing:
            return {}
        names = ", ".join(_differences(differing))
        logger.warning("%s is rebuilt as saved in the checkpoint%s: %s.", type(self).__name__, source, names)
        signature = inspect.signature(type(self).__init__).parameters
        fresh = type(self)(**{key: value for key, value in saved.items() if key in signature})
        for name, module in fresh.named_children():  # type: ignore[attr-defined]
            if name not in COMPONENTS:
                setattr(self, name, module)
        for key in saved:
            value = getattr(fresh, key, None)
            if key in signature and hasattr(self, key) and not isinstance(value, torch.nn.Module):
                setattr(self, key, value)
        own, theirs = getattr(self, "pre_processor", None), getattr(fresh, "pre_processor", None)
        if isinstance(own, PreProcessor) and isinstance(theirs, PreProcessor) and current.get("pre_processor", True):
            own.transform, own.export_transform = theirs.transform, theirs.export_transform
        self.hparams.update(saved)  # type: ignore[attr-defined]
        return differing

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Export to ONNX at opset :data:`ONNX_OPSET` unless ``opset_version`` is given (OpenVINO export too)."""
        kwargs.setdefault("opset_version", ONNX_OPSET)
        with self._exporting():
            path = super().to_onnx(export_root, model_file_name, input_size, **kwargs)  # type: ignore[misc]
        return self._say_exported(path)

    def to_openvino(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:
        """Export to OpenVINO (anomalib's, through :meth:`to_onnx`) quietly, printing where the model went."""
        with self._exporting():
            path = super().to_openvino(export_root, *args, **kwargs)  # type: ignore[misc]
        return self._say_exported(path)

    def to_torch(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:
        """Export to torch (anomalib's), printing where the model went and how to load it."""
        with self._exporting():
            path = super().to_torch(export_root, *args, **kwargs)  # type: ignore[misc]
        return self._say_exported(path, " (load it with TorchInferencer after setting TRUST_REMOTE_CODE=1)")

    @contextlib.contextmanager
    def _exporting(self) -> Iterator[None]:
        """Silence onnxscript's per-pass INFO lines; count nested exports (OpenVINO goes through ONNX)."""
        self._export_depth = getattr(self, "_export_depth", 0) + 1
        try:
            with quieter(EXPORT_LOGGERS):
                yield
        finally:
            self._export_depth -= 1

    def _say_exported(self, path: Any, hint: str = "") -> Any:
        if path is not None and getattr(self, "_export_depth", 0) == 0:
            print(f"\nExported model: {path}{hint}")  # noqa: T201
        return path

    def on_train_epoch_start(self) -> None:
        """Make the last epoch (by ``max_epochs``) validate even when ``check_val_every_n_epoch`` would skip it.

        Also warns, once per fit, when the trainer has no validation at all: nothing would fit thresholds or
        normalisation.
        """
        trainer = self.trainer  # type: ignore[attr-defined]
        if not trainer.enable_validation and getattr(self, "_warned_no_validation", None) is not trainer:
            self._warned_no_validation = trainer
            logger.warning(
                "No validation runs in this fit (no validation data or limit_val_batches=0): thresholds and "
                "normalisation stay unset, so predicted labels and masks are meaningless."
            )
        if (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and trainer.current_epoch + 1 >= trainer.max_epochs
        ):
            _validate_this_epoch(trainer)
        super().on_train_epoch_start()  # type: ignore[misc]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """When this is the last training step (``max_steps``, or the model stopping), validate before ending."""
        trainer = self.trainer  # type: ignore[attr-defined]
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if last_step or trainer.should_stop:
            _validate_this_epoch(trainer)
            trainer.should_stop = True  # Lightning validates a stopping epoch at once
        super().on_train_batch_end(outputs, batch, batch_idx)  # type: ignore[misc]

    def on_fit_end(self) -> None:
        """Print where the checkpoint is; remember the checkpoint a resumed fit came from (see on_load_checkpoint)."""
        trainer = getattr(self, "_trainer", None)
        ckpt_path = getattr(trainer, "ckpt_path", None)
        self._resumed_fit_from = str(ckpt_path) if ckpt_path else None
        callback = getattr(trainer, "checkpoint_callback", None)
        saved = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        if saved and trainer is not None and trainer.is_global_zero:
            command = f"anomalib test --model {_cli_name(self)} --data ... --ckpt_path {saved}"
            print(f"\nCheckpoint: {saved}\n  test it: {command}")  # noqa: T201
        super().on_fit_end()  # type: ignore[misc]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the just-trained weights when a resumed fit is followed by a test of the resume checkpoint.

        ``anomalib train --ckpt_path X`` resumes the fit from ``X`` and then tests with ``ckpt_path=X``, which
        would load the stale weights (and post-processing statistics) of ``X`` over the model just trained and
        report their metrics.
        """
        trainer = getattr(self, "_trainer", None)
        resumed = getattr(self, "_resumed_fit_from", None)
        if (
            resumed is not None
            and trainer is not None
            and trainer.state.fn == TrainerFn.TESTING
            and str(trainer.ckpt_path) == resumed
        ):
            logger.info(
                "anomalib's train tests with the checkpoint its fit resumed from (%s); Lightning reads that file next, "
                "but the weights tested are those just trained, not the checkpoint's.",
                resumed,
            )
            checkpoint["state_dict"] = dict(self.state_dict())  # type: ignore[attr-defined]
            checkpoint.pop("callbacks", None)  # the post-processor's stale normalisation statistics too
            self._resumed_fit_from = None
        elif trainer is not None:
            path = getattr(trainer, "ckpt_path", None)
            if self.adopt_checkpoint_configuration(checkpoint, f" {path}" if path else ""):
                # anomalib's datamodule copied the model's resize into its datasets at set-up, before this restore:
                # its setup (already done, so it only refreshes that copy) takes the checkpoint's resize instead
                datamodule = getattr(trainer, "datamodule", None)
                if datamodule is not None:
                    datamodule.setup(trainer.state.fn)
        self.category_names = list(checkpoint.get(CATEGORY_KEY, []))  # a resumed fit's file has the same names
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Also store the category names (the meaning of the model's category indices)."""
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint[CATEGORY_KEY] = list(getattr(self, "category_names", []))

    @torch.no_grad()
    def sum_per_category(
        self,
        features: Callable[[torch.Tensor, Any], torch.Tensor],
        classes_of: Callable[[Any], torch.Tensor],
        num_categories: int,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Per-category sums (float64) and image counts of ``features(images, batch)`` over the training images.

        One pass over this rank's training data (:meth:`iterate_training_images`), summed over ranks under DDP;
        ``classes_of(batch)`` gives each image's category index (negative: left out). The sums are ``None`` when
        this rank has no training image.
        """
        device = self.device  # type: ignore[attr-defined]
        sums: torch.Tensor | None = None
        counts = torch.zeros(num_categories, dtype=torch.float64, device=device)
        for images, batch in self.iterate_training_images():
            values = features(images, batch).double()
            classes = classes_of(batch)
            known = classes >= 0
            if sums is None:
                sums = torch.zeros(num_categories, *values.shape[1:], dtype=torch.float64, device=device)
            sums.index_add_(0, classes[known], values[known])
            counts += torch.bincount(classes[known], minlength=num_categories).to(counts)
        if sums is None:
            return None, counts
        strategy = self.trainer.strategy  # type: ignore[attr-defined]
        return strategy.reduce(sums, reduce_op="sum"), strategy.reduce(counts, reduce_op="sum")

    def position_moments_per_category(
        self,
        features: Callable[[torch.Tensor, Any], torch.Tensor],
        classes_of: Callable[[Any], torch.Tensor],
        num_categories: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-category, per-position first and second moments of ``(B, P, D)`` ``features(images, batch)``.

        One pass over the training images as :meth:`sum_per_category` (same order, summed over DDP ranks), returning
        float64 sums ``(K, P, D)``, sums of outer products ``(K, P, D, D)`` and image counts ``(K,)``: each
        category's mean and covariance at every position follow. The outer products are summed per category present
        in a batch, never stored per image.
        """
        device = self.device  # type: ignore[attr-defined]
        sums: torch.Tensor | None = None
        outer: torch.Tensor | None = None
        counts = torch.zeros(num_categories, dtype=torch.float64, device=device)
        for images, batch in self.iterate_training_images():
            values = features(images, batch).double()
            classes = classes_of(batch)
            if sums is None or outer is None:
                _, positions, width = values.shape
                sums = torch.zeros(num_categories, positions, width, dtype=torch.float64, device=device)
                outer = torch.zeros(num_categories, positions, width, width, dtype=torch.float64, device=device)
            for category in classes[classes >= 0].unique().tolist():
                members = values[classes == category]
                sums[category] += members.sum(dim=0)
                outer[category] += torch.einsum("npd,npe->pde", members, members)
                counts[category] += len(members)
        if sums is None or outer is None:
            msg = "The training set is empty: no per-position statistics can be computed."
            raise BadInputError(msg)
        strategy = self.trainer.strategy  # type: ignore[attr-defined]
        return (
            strategy.reduce(sums, reduce_op="sum"),
            strategy.reduce(outer, reduce_op="sum"),
            strategy.reduce(counts, reduce_op="sum"),
        )

    def fit_category_prototypes(
        self, prototypes: CategoryPrototypes, features: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        """Per-category mean of ``features(images)`` over the training images, into ``prototypes``.

        Sets :attr:`category_names`. The global random stream is left as it was, so the training that follows draws
        what it drew without this pass.
        """
        index = self.current_category_index()
        names = list(index.names)
        device = self.device  # type: ignore[attr-defined]
        with torch.random.fork_rng(devices=[]):
            sums, counts = self.sum_per_category(
                lambda images, _batch: features(images),
                lambda batch: batch_category_indices(batch, index, device=device),
                len(names),
            )
        if sums is None:
            return
        prototypes.set(sums / counts.clamp_min(1).view(-1, 1))
        self.category_names = names
        logger.info("Category prototypes %s for %s.", tuple(prototypes.prototypes.shape), names)

    def current_category_index(self) -> CategoryIndex:
        """Category index of the trainer's datamodule (one category for anomalib's own datamodules)."""
        trainer = getattr(self, "_trainer", None)
        return category_index_for(getattr(trainer, "datamodule", None) if trainer is not None else None)

    def iterate_training_images(self) -> Iterator[tuple[torch.Tensor, Any]]:
        """Yield ``(pre-processed images on the model's device, batch)`` over this rank's training data once.

        Used by models that need a pass over the data before training (e.g. CRAS's class centers). Goes over the
        training dataset in order with the training loader's batch size, workers and collate function; under DDP
        each rank sees its own shard and every image is seen exactly once over all ranks (no padding repeats), so
        sums reduced over ranks equal the one-process sums.
        """
        trainer = self.trainer  # type: ignore[attr-defined]
        loader = trainer.train_dataloader
        if loader is None:
            trainer.fit_loop.setup_data()
            loader = trainer.train_dataloader
        if isinstance(loader, DataLoader) and loader.batch_size is not None:
            loader = DataLoader(
                loader.dataset,
                batch_size=loader.batch_size,
                sampler=shard_sampler(loader.dataset, trainer),
                shuffle=False,
                num_workers=loader.num_workers,
                collate_fn=loader.collate_fn,
            )
        pre_processor = getattr(self, "pre_processor", None)
        for batch in loader:
            images = batch.image.to(self.device)  # type: ignore[attr-defined]
            if pre_processor is not None and pre_processor.transform is not None:
                images = pre_processor.transform(images)
            yield images, batch
