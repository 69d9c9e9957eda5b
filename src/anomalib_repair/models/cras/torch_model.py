"""PyTorch network of CRAS: frozen backbone, patch aggregation, adaptor, class centers and residual discriminator."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_repair.components.anomaly_map import AnomalyMapGenerator, top_mean_score
from anomalib_repair.components.backbone import build_backbone
from anomalib_repair.components.feature_cache import MemoisedEmbedding
from anomalib_repair.components.patch_features import PatchAggregator
from anomalib_repair.components.tracing import is_exporting
from anomalib_repair.components.triangular import lower_triangular_product
from anomalib_repair.data.synthesis import distance_guided_noise
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.cras.loss import CrasLoss


def _xavier_linear(layer: nn.Module) -> None:
    if isinstance(layer, nn.Linear):
        nn.init.xavier_normal_(layer.weight)


SCORE_MODES = ("logit", "probability")
IMAGE_SCORES = ("patch_max", "map_max", "map_top_mean")
RESIDUALS = ("center", "whitened", "center_and_whitened")
WHITENED_RESIDUALS = ("whitened", "center_and_whitened")  # the residuals that need per-position statistics


class ResidualDiscriminator(nn.Sequential):
    """MLP that scores ``[f, f - c]`` (or more residuals beside ``f``) with one anomaly logit.

    Two Linear, BatchNorm, LeakyReLU(0.2) blocks halve the width, then a bias-free Linear gives one logit. The
    paper's sigmoid is not a layer here: the loss takes the logit (binary cross-entropy with logits, the same
    function as BCE on the sigmoid, without its saturation), and :class:`CrasModel` applies the sigmoid only when
    ``score_mode="probability"``. The layer indices, hence the state-dict keys, are those of a network that ended
    with a ``Sigmoid`` (it has no parameters).

    Args:
        embed_dim: Width ``D`` of a feature; the input is ``num_inputs·D``.
        num_blocks: Number of halving blocks (2 in the paper).
        num_inputs: Number of ``D``-wide parts of the input (2 in the paper: the feature and its residual).
    """

    def __init__(self, embed_dim: int, num_blocks: int = 2, num_inputs: int = 2) -> None:
        layers: list[nn.Module] = []
        width = num_inputs * embed_dim
        for _ in range(num_blocks):
            layers += [nn.Linear(width, width // 2), nn.BatchNorm1d(width // 2), nn.LeakyReLU(0.2)]
            width //= 2
        layers += [nn.Linear(width, 1, bias=False)]
        super().__init__(*layers)
        self.apply(_xavier_linear)


class CrasModel(nn.Module):
    """CRAS network.

    Args:
        backbone: timm backbone name (see :mod:`anomalib_repair.components.backbone`).
        layers: Two (or more) feature taps, finest first.
        pre_trained: Load pretrained backbone weights.
        backbone_weights: Optional local weight file.
        embed_dim: Patch feature width after aggregation (1536).
        patch_size: Neighbourhood of the patch aggregation (3).
        sigma: Gaussian smoothing of the anomaly map (4).
        center_dtype: Storage precision of the class centers (``"float32"`` or ``"float16"``).
        match_chunk: Images matched against the centers at once (bounds the memory of the similarity matrix).
        score_mode: What the patch scores, the map and the image score are made of: ``"logit"`` (the
            discriminator's pre-sigmoid output; default) or ``"probability"`` (its sigmoid, the paper's). Both rank
            patches the same until the sigmoid saturates: in float32 ``sigmoid(x) == 1.0`` for every ``x > 16.6``,
            and once a patch of every test image is there, all images tie at 1.0 (image AUROC 0.5).
        image_score: How an image's score is read from its patch scores: ``"patch_max"`` (the highest patch
            score, the paper's; default), ``"map_max"`` (the highest value of the smoothed, upsampled anomaly map,
            as anomalib's PaDiM does) or ``"map_top_mean"`` (the mean of the map's highest ``top_ratio`` share).
        top_ratio: Share of the map's pixels averaged by ``image_score="map_top_mean"`` (0.01).
        noise_std: σ of the training feature noise (paper: 0.015).
        noise_k: Distance-guidance strength ``k`` of the noise (paper: 0.3).
        residual: What the discriminator sees beside the adapted feature: ``"center"`` (the paper's ``f − c``, with
            ``c`` the nearest class center) or ``"whitened"``: the frozen feature's residual to its category's
            mean **at the same position**, whitened by that position's covariance (``L⁻¹(x − μ)`` with
            ``Σ + εI = L Lᵀ``, so its squared norm is the Mahalanobis distance). With ``"whitened"`` the noise is
            added to the frozen feature before the adaptor, so a synthetic patch has both parts. Statistics:
            ``K × P × D × D`` values (about 151 MB per category for 256 patches of 384-d).
            ``"center_and_whitened"`` gives the discriminator both residuals, ``[f, f − c, L⁻¹(x − μ)]`` (``3·D``
            wide), with the noise on the frozen feature as for ``"whitened"``.
        whiten_eps: ``ε`` added to each covariance's diagonal before it is factorised (``"whitened"`` only).
        whiten_shrinkage: ``α`` in ``[0, 1)``: each covariance is first shrunk toward the scaled identity of its
            own average variance, ``(1 − α) Σ + α (tr Σ / D) I`` (``"whitened"`` only; 0 keeps ``Σ``). With fewer
            good images per category than feature dimensions, ``Σ`` is rank-deficient and ``ε`` alone decides how
            much its null directions are amplified; shrinkage scales that with each position's own variance.
        whiten_folds: ``F``: cross-fitted whitening for training (``"whitened"`` only; 0 or 1: off, the same
            statistics for training and testing). The training images are dealt into ``F`` folds by their path, and
            during training each image's residual is whitened with the mean and covariance of the *other* folds of
            its category, so the discriminator learns from residuals of images the statistics never saw, as a test
            image's are. Testing uses every training image's statistics, as without it. Costs ``F`` further sets of
            statistics while training (freed after it).
    """

    def __init__(
        self,
        backbone: str = "wide_resnet50_2.tv_in1k",
        layers: Sequence[str] = ("layer2", "layer3"),
        pre_trained: bool = True,
        backbone_weights: str | None = None,
        embed_dim: int = 1536,
        patch_size: int = 3,
        sigma: float = 4.0,
        center_dtype: str = "float32",
        match_chunk: int = 8,
        score_mode: str = "logit",
        image_score: str = "patch_max",
        top_ratio: float = 0.01,
        noise_std: float = 0.015,
        noise_k: float = 0.3,
        residual: str = "center",
        whiten_eps: float = 0.01,
        whiten_shrinkage: float = 0.0,
        whiten_folds: int = 0,
    ) -> None:
        super().__init__()
        if residual not in RESIDUALS:
            msg = f"residual must be one of {', '.join(RESIDUALS)}, got '{residual}'."
            raise ValueError(msg)
        if whiten_eps <= 0:
            msg = f"whiten_eps must be positive, got {whiten_eps}."
            raise ValueError(msg)
        if not 0.0 <= whiten_shrinkage < 1.0:
            msg = f"whiten_shrinkage must be in [0, 1), got {whiten_shrinkage}."
            raise ValueError(msg)
        if whiten_folds < 0:
            msg = f"whiten_folds must be 0 (off) or a number of folds, got {whiten_folds}."
            raise ValueError(msg)
        if score_mode not in SCORE_MODES:
            msg = f"score_mode must be one of {', '.join(SCORE_MODES)}, got '{score_mode}'."
            raise ValueError(msg)
        if image_score not in IMAGE_SCORES:
            msg = f"image_score must be one of {', '.join(IMAGE_SCORES)}, got '{image_score}'."
            raise ValueError(msg)
        self.score_mode = score_mode
        self.image_score = image_score
        self.top_ratio = top_ratio
        self.backbone = build_backbone(backbone, layers, pre_trained=pre_trained, backbone_weights=backbone_weights)
        self.aggregator = PatchAggregator(
            pool_dim=embed_dim, patch_size=patch_size, in_channels=self.backbone.out_channels
        )
        self.adaptor = nn.Linear(embed_dim, embed_dim)
        _xavier_linear(self.adaptor)
        self.discriminator = ResidualDiscriminator(embed_dim, num_inputs=3 if residual == "center_and_whitened" else 2)
        self.anomaly_map_generator = AnomalyMapGenerator(sigma=sigma)
        self.center_dtype = getattr(torch, center_dtype)
        self.match_chunk = match_chunk
        self.register_buffer("centers", torch.zeros(0, 0, embed_dim, dtype=self.center_dtype))
        self.residual = residual
        self.whiten_eps = whiten_eps
        self.whiten_shrinkage = whiten_shrinkage
        self.whiten_folds = whiten_folds if whiten_folds > 1 else 0
        # out-of-fold (K·F, P, D) means and whiteners for training (whiten_folds): plain attributes, never saved
        self.training_means: torch.Tensor | None = None
        self.training_whiteners: torch.Tensor | None = None
        self.position_means: torch.Tensor
        self.position_whiteners: torch.Tensor
        if residual in WHITENED_RESIDUALS:  # only then: checkpoints of the paper's residual keep their keys
            self.register_buffer("position_means", torch.zeros(0, 0, embed_dim))
            self.register_buffer("position_whiteners", torch.zeros(0, 0, embed_dim, embed_dim))
        self.centers: torch.Tensor
        self.noise_std = noise_std
        self.noise_k = noise_k
        self.loss = CrasLoss()
        self.feature_memo: MemoisedEmbedding | None = None  # set by the Lightning module to cache training features

    # ------------------------------------------------------------------ features
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Frozen backbone + patch aggregation: ``(B, P, D)`` features before the adaptor, and the grid size."""
        with torch.no_grad():
            features = self.backbone(images)
            return self.aggregator(features), self.aggregator.grid_size(features)

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, P, D)`` frozen patch features (:meth:`embed` without the grid)."""
        return self.embed(images)[0]

    def training_features(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """``(B, P, D)`` embedded training images: from ``feature_memo`` when one is set (keyed by image path)."""
        if self.feature_memo is not None:
            return self.feature_memo(images, keys)
        return self.patch_features(images)

    @property
    def num_classes(self) -> int:
        """Number of class-center sets (0 before training)."""
        return int(self.centers.shape[0])

    def set_centers(self, centers: torch.Tensor) -> None:
        """Store ``(K, P, D)`` class centers (in the configured precision)."""
        self.centers = centers.to(dtype=self.center_dtype, device=self.centers.device)

    def set_position_statistics(self, means: torch.Tensor, covariances: torch.Tensor) -> None:
        """Store each category's ``(K, P, D)`` means and the whiteners ``L⁻¹`` of its ``(K, P, D, D)`` covariances."""
        device = self.position_means.device
        self.position_means = means.float().to(device)
        self.position_whiteners = self._whiteners(covariances).to(device)

    def set_training_statistics(self, means: torch.Tensor | None, covariances: torch.Tensor | None) -> None:
        """Out-of-fold ``(K·F, P, D)`` means and ``(K·F, P, D, D)`` covariances for training, or ``None`` to free.

        Row ``k·F + f`` holds category ``k`` without fold ``f`` (``whiten_folds``); they are not saved with the model.
        """
        if means is None or covariances is None:
            self.training_means = self.training_whiteners = None
            return
        device = self.position_means.device
        self.training_means = means.float().to(device)
        self.training_whiteners = self._whiteners(covariances).to(device)

    def _whiteners(self, covariances: torch.Tensor) -> torch.Tensor:
        """Float32 lower-triangular ``L⁻¹`` of every ``Σ + εI = L Lᵀ`` (after shrinkage), a category at a time."""
        eye = torch.eye(covariances.shape[-1], dtype=covariances.dtype, device=covariances.device)
        whiteners = torch.empty(covariances.shape, dtype=torch.float32, device=covariances.device)
        for index, raw in enumerate(covariances):  # bounds the float64 working set
            covariance = raw
            if self.whiten_shrinkage > 0:
                average_variance = raw.diagonal(dim1=-2, dim2=-1).mean(dim=-1)[..., None, None]
                alpha = self.whiten_shrinkage
                covariance = (1 - alpha) * raw + alpha * average_variance * eye
            factor = torch.linalg.cholesky(covariance + self.whiten_eps * eye)
            # lower-triangular (exact zeros above the diagonal): whitened_residuals reads only the lower triangle
            whiteners[index] = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False).tril()
        return whiteners

    def fold_of(self, keys: Sequence[str]) -> torch.Tensor:
        """Fold of each training image (``whiten_folds``), from its path: the same on every machine and rank."""
        folds = max(self.whiten_folds, 1)
        # a cryptographic hash: CRC32's low bits put every path of a numbered folder in one fold
        digests = (hashlib.blake2b(key.encode(), digest_size=8).digest() for key in keys)
        return torch.tensor([int.from_bytes(digest, "little") % folds for digest in digests], dtype=torch.long)

    def whitened_residuals(
        self,
        features: torch.Tensor,
        classes: torch.Tensor,
        statistics: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(B, P, D)`` residuals of frozen features to their category's same-position mean, whitened.

        ``statistics`` (``(means, whiteners)``, indexed by ``classes``) replaces the model's own: training with
        ``whiten_folds`` passes the out-of-fold ones.
        """
        means, whiteners = statistics if statistics is not None else (self.position_means, self.position_whiteners)
        if means.shape[0] == 0:
            msg = "CRAS with residual='whitened' has no per-position statistics yet: train (fit) the model first."
            raise BadInputError(msg)
        if means.shape[1] != features.shape[1]:
            msg = (
                f"CRAS's whitening statistics hold {means.shape[1]} positions, the image gives "
                f"{features.shape[1]}: test at the training input size."
            )
            raise BadInputError(msg)
        offsets = features - means[classes]
        if is_exporting():  # every category, then each image's own: no data-dependent shapes in the graph
            residuals = torch.zeros_like(features)
            for category in range(whiteners.shape[0]):
                whitened = lower_triangular_product(whiteners[category], offsets)
                residuals = torch.where((classes == category).view(-1, 1, 1), whitened, residuals)
            return residuals
        residuals = torch.empty_like(features)
        for category in classes.unique().tolist():
            members = (classes == category).nonzero().squeeze(1)
            residuals[members] = lower_triangular_product(whiteners[category], offsets[members])
        return residuals

    # ------------------------------------------------------------------ center matching
    def infer_classes(self, features: torch.Tensor) -> torch.Tensor:
        """Class of each image: the center set most cosine-similar to the whole image's ``P·D`` feature vector."""
        if self.num_classes == 1:
            return torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        flat = F.normalize(features.flatten(1).float(), dim=1)
        similarity = torch.stack(
            [flat @ F.normalize(center.flatten().float(), dim=0) for center in self.centers],
            dim=1,
        )
        return similarity.argmax(dim=1)

    def match_centers(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """For every patch, the most cosine-similar of its image's class centers (position-free), ``(B, P, D)``."""
        if is_exporting():  # one chunk: a loop over the batch would freeze the exported batch size
            return self._match_chunk(features, classes)
        matched = torch.empty_like(features)
        for start in range(0, features.shape[0], self.match_chunk):
            stop = start + self.match_chunk
            matched[start:stop] = self._match_chunk(features[start:stop], classes[start:stop])
        return matched

    def _match_chunk(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        bank = self.centers[classes].to(features.dtype)
        similarity = torch.bmm(F.normalize(features.detach(), dim=2), F.normalize(bank, dim=2).transpose(1, 2))
        nearest = similarity.argmax(dim=2)  # (B, P): the chosen center of each patch within its image's set
        # whole rows by index from the (K·Pc, D) centers (a row gather; per-element gathering was slow in OpenVINO)
        rows = classes.unsqueeze(1) * self.centers.shape[1] + nearest
        return self.centers.flatten(0, 1)[rows.flatten()].to(features.dtype).view_as(features)

    def logits(self, features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Discriminator logits for ``(N, D)`` features and their centers: ``(N,)`` (what the loss takes)."""
        return self.discriminator(torch.cat([features, features - centers], dim=1)).squeeze(1)

    def score(self, features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
        """Patch anomaly scores for ``(N, D)`` features: logits, or probabilities with ``score_mode="probability"``."""
        return self.scores_from_logits(self.logits(features, centers))

    def scores_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Patch scores from discriminator logits: the logits, or their sigmoid with ``score_mode="probability"``."""
        return torch.sigmoid(logits) if self.score_mode == "probability" else logits

    def whitened_logits(
        self, adapted: torch.Tensor, center_offsets: torch.Tensor | None, whitened: torch.Tensor
    ) -> torch.Tensor:
        """Discriminator logits of ``(B, P, ·)`` patches fed ``[f, (f − c), L⁻¹(x − μ)]``, flattened to ``(B·P,)``.

        ``center_offsets`` (``f − c``) is given with ``residual="center_and_whitened"`` and ``None`` otherwise.
        """
        parts = [adapted, whitened] if center_offsets is None else [adapted, center_offsets, whitened]
        return self.discriminator(torch.cat(parts, dim=2).flatten(0, 1)).squeeze(1)

    # ------------------------------------------------------------------ training
    def training_loss(self, images: torch.Tensor, classes: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """The paper's loss for one batch of normal images of known ``classes``.

        Adapt the frozen features, match every patch to its class centers, synthesise an anomalous twin of each
        patch with distance-guided noise, and score both: BCE pushes real patches to 0 and synthetic ones to 1.
        """
        if self.residual in WHITENED_RESIDUALS:
            scores = self._whitened_training_logits(self.training_features(images, keys), classes, keys)
        else:
            adapted = self.adaptor(self.training_features(images, keys))
            centers = self.match_centers(adapted, classes)
            real = adapted.flatten(0, 1)
            matched = centers.flatten(0, 1)
            fake = distance_guided_noise(real, matched, sigma=self.noise_std, k=self.noise_k)
            scores = self.logits(torch.cat([real, fake]), torch.cat([matched, matched]))
        if not torch.isfinite(scores).all():  # the loss would fail inside binary cross-entropy, deep down
            msg = "CRAS scores are not finite (NaN/inf): lower adaptor_lr/discriminator_lr or check the input images."
            raise BadInputError(msg)
        real_count = len(scores) // 2  # real patches first, then their synthetic twins
        loss = self.loss(scores[:real_count], scores[real_count:])
        if not torch.isfinite(loss):
            msg = "CRAS loss is not finite (NaN/inf): lower adaptor_lr/discriminator_lr or check the input images."
            raise BadInputError(msg)
        return loss

    def _whitened_training_logits(self, features: torch.Tensor, classes: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """Logits of real patches, then of their synthetic twins (noise on the frozen feature, before the adaptor).

        With ``whiten_folds`` both are whitened with the statistics of the other folds of the image's category.
        """
        statistics = None
        rows = classes  # rows of the whitening statistics; ``classes`` stays the category (centers)
        if self.training_means is not None and self.training_whiteners is not None:
            statistics = (self.training_means, self.training_whiteners)
            rows = classes * self.whiten_folds + self.fold_of(keys).to(classes.device)
        means = (self.position_means if statistics is None else statistics[0])[rows]
        fake = distance_guided_noise(
            features.flatten(0, 1), means.flatten(0, 1), sigma=self.noise_std, k=self.noise_k
        ).view_as(features)
        both = torch.cat([features, fake])
        both_rows = torch.cat([rows, rows])
        adapted = self.adaptor(both)
        center_offsets = None
        if self.residual == "center_and_whitened":  # a twin keeps its real patch's center, as in the paper
            centers = self.match_centers(adapted[: len(features)], classes)
            center_offsets = adapted - torch.cat([centers, centers])
        return self.whitened_logits(adapted, center_offsets, self.whitened_residuals(both, both_rows, statistics))

    # ------------------------------------------------------------------ inference
    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Score images: an image score (``image_score``) and a smoothed anomaly map (no category label needed)."""
        return self.predict(images)[0]

    def predict(self, images: torch.Tensor) -> tuple[InferenceBatch, torch.Tensor]:
        """:meth:`forward`'s outputs and each image's inferred class (the index of its center set)."""
        features, (height, width) = self.embed(images)
        adapted = self.adaptor(features)
        classes = self.infer_classes(adapted)
        if self.residual in WHITENED_RESIDUALS:
            center_offsets = None
            if self.residual == "center_and_whitened":
                center_offsets = adapted - self.match_centers(adapted, classes)
            logits = self.whitened_logits(adapted, center_offsets, self.whitened_residuals(features, classes))
            patch_scores = self.scores_from_logits(logits)
        else:
            centers = self.match_centers(adapted, classes)
            patch_scores = self.score(adapted.flatten(0, 1), centers.flatten(0, 1))
        scores = patch_scores.reshape(images.shape[0], 1, height, width)
        anomaly_map = self.anomaly_map_generator(scores, image_size=tuple(images.shape[-2:]))
        output = InferenceBatch(pred_score=self.image_scores(scores, anomaly_map), anomaly_map=anomaly_map)
        return output, classes

    def image_scores(self, patch_scores: torch.Tensor, anomaly_map: torch.Tensor) -> torch.Tensor:
        """One score per image from its ``(B, 1, h, w)`` patch scores and ``(B, 1, H, W)`` map (``image_score``)."""
        if self.image_score == "patch_max":
            return patch_scores.flatten(1).amax(dim=1)
        return top_mean_score(anomaly_map, self.top_ratio if self.image_score == "map_top_mean" else 0.0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        whiteners = state_dict.get(prefix + "position_whiteners")
        if self.residual in WHITENED_RESIDUALS and whiteners is not None and not _lower_triangular(whiteners):
            # checked before any buffer is replaced: a refused load leaves the model as it was
            msg = "CRAS's position_whiteners in the state dict are not (K, P, D, D) lower-triangular: re-fit the model."
            raise BadInputError(msg)
        key = prefix + "centers"
        if key in state_dict:
            self.centers = torch.empty_like(state_dict[key], dtype=self.center_dtype, device=self.centers.device)
        for name in ("position_means", "position_whiteners"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.centers.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _lower_triangular(whiteners: torch.Tensor) -> bool:
    """Whether ``(K, P, D, D)`` whiteners hold zeros above every diagonal (checked a slice at a time: no full copy)."""
    if whiteners.ndim != 4 or whiteners.shape[-1] != whiteners.shape[-2]:
        return False
    if whiteners.is_meta:
        return True  # nothing to read yet
    return not any(bool(chunk.triu(diagonal=1).any()) for chunk in whiteners.flatten(0, 1).split(256))
