"""CRR's option groups: stage I, stage II, anomaly synthesis and scoring, each a frozen dataclass.

:class:`~anomalib_repair.models.crr.lightning_model.CRR` takes the encoder's options directly and everything else
in four groups, each given as the dataclass, a (partial) dict or ``None`` (the defaults)::

    CRR(stage1={"steps": 2_000}, stage2=StageIIOptions(steps=800), synthesis={"texture_dir": "./dtd/images"})

On the command line a group's option is ``--model.stage1.steps 2000``; in a YAML recipe ``stage1: {steps: 2000}``.
The model's saved hyperparameters hold the groups as plain dicts (checkpoints load with ``weights_only=True``).

The flat names of earlier releases (``stage1_steps``, ``seg_lr``, ``texture_dir``, …) are mapped to the groups by
:data:`LEGACY_NAMES`: in Python they still work with one ``FutureWarning`` line naming the new names; checkpoints
saved with them load with their configuration (:func:`group_flat_arguments`); on the command line and in YAML
configs anomalib's parser refuses them, and inside anomalib's CLI the refusal is one line naming the new options
(:func:`parser_error_hint`, installed by :mod:`anomalib_repair.cli_support`).

A group's option set to ``null`` on the command line needs the group's dict form, ``--model.stage2 '{size: null}'``
(jsonargparse 4.46 turns ``--model.stage2.size=null`` into the text ``'None'``; the CLI says so in one line). In a
YAML config ``size: null`` under ``stage2:`` works as usual.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anomalib_repair.data.synthesis.anomaly_synthesis import FOREGROUND_MODES
from anomalib_repair.errors import BadInputError
from anomalib_repair.models.crr.torch_model import SEG_INITS


def _check_batch_size(option: str, value: int | None) -> None:
    if value is not None and value < 1:
        msg = f"{option} must be >= 1 or None (whole batch), got {value}."
        raise BadInputError(msg)


@dataclass(frozen=True)
class StageIOptions:
    """Stage I: the reconstruction network (masking bottleneck + linear-attention decoder) and its training.

    Attributes:
        steps: Steps of stage I (paper: 50 000 on Real-IAD; Dinomaly's MVTec AD/VisA recipe 10 000).
        batch_size: Images per stage-I step, the first ones of each training batch (16, the paper's); ``None`` for
            the whole batch. Both stages draw from the one training loader, so its batch size must be at least the
            larger of the two stages' (a warning at the start of training says when it is not).
        lr: Peak learning rate (StableAdamW), reached after ``warmup_steps``.
        final_lr: Final learning rate of the cosine decay.
        warmup_steps: Linear warm-up steps.
        weight_decay: StableAdamW weight decay.
        gradient_clip: Gradient norm clip (0: none).
        hard_mining_p: Final share of easy points whose gradients are scaled down.
        hard_mining_ramp: Steps over which that share ramps up from 0.
        hard_mining_factor: Gradient factor of the easy points.
        decoder_depth: Linear-attention decoder blocks.
        groups: Loose-reconstruction groups of taps / reversed decoder outputs (``None``: two halves, for the
            paper's 8 taps ``[[0..3], [4..7]]``).
        mask_ratio: Feature-level element masking probability of the bottleneck.
        dropout: Bottleneck dropout.
        eval_masking: Keep the element masking on at test time, as the authors' code does (random scores);
            ``False`` gives deterministic scores.
    """

    steps: int = 10_000
    batch_size: int | None = 16
    lr: float = 2e-3
    final_lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    gradient_clip: float = 0.1
    hard_mining_p: float = 0.9
    hard_mining_ramp: int = 1000
    hard_mining_factor: float = 0.1
    decoder_depth: int = 8
    groups: Sequence[Sequence[int]] | None = None
    mask_ratio: float = 0.4
    dropout: float = 0.4
    eval_masking: bool = False

    def __post_init__(self) -> None:
        """Refuse, in one line, a stage without steps or an empty batch."""
        if self.steps < 1:
            msg = f"stage1.steps must be >= 1, got {self.steps}."
            raise BadInputError(msg)
        _check_batch_size("stage1.batch_size", self.batch_size)


@dataclass(frozen=True)
class StageIIOptions:
    """Stage II: the segmentation network, which finds the damage from the encoder/decoder disagreement.

    Attributes:
        steps: Steps of stage II (0: none; the anomaly map is then the reconstruction map only).
        batch_size: Images per stage-II step, the first ones of each training batch; ``None`` for all.
        lr: Adam learning rate.
        focal_gamma: Focal loss γ.
        base_width: Width ``b`` of the segmentation network (``None``: its input channels // 8 = 192).
        size: Output size of the segmentation network (256 as in the reference; ``None``: the input size).
        init: Initialisation of the segmentation network: ``"reference"`` (the authors' code, from DRAEM:
            convolution weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0) or ``"pytorch"``
            (PyTorch's default initialisation).
    """

    steps: int = 8_000
    batch_size: int | None = 8
    lr: float = 1e-4
    focal_gamma: float = 2.0
    base_width: int | None = None
    size: int | None = 256
    init: str = "reference"

    def __post_init__(self) -> None:
        """Refuse, in one line, negative steps, an empty batch or an unknown initialisation."""
        if self.steps < 0:
            msg = f"stage2.steps must be >= 0, got {self.steps}."
            raise BadInputError(msg)
        _check_batch_size("stage2.batch_size", self.batch_size)
        if self.init not in SEG_INITS:
            msg = f"stage2.init must be one of {', '.join(SEG_INITS)}, got '{self.init}'."
            raise BadInputError(msg)


@dataclass(frozen=True)
class SynthesisOptions:
    """The synthetic anomalies both stages train on (:mod:`anomalib_repair.data.synthesis`).

    Attributes:
        texture_dir: Folder of texture images (e.g. DTD) used as anomaly source with ``texture_probability``;
            ``None`` uses self-augmented, grid-shuffled sources only.
        texture_probability: Probability of a texture source.
        foreground: ``"auto"`` (defects only on the object) or ``"off"`` (anywhere in the image).
    """

    texture_dir: str | None = None
    texture_probability: float = 0.5
    foreground: str = "auto"

    def __post_init__(self) -> None:
        """Refuse, in one line, an unknown foreground mode."""
        if self.foreground not in FOREGROUND_MODES:
            msg = f"synthesis.foreground must be 'auto' or 'off', got '{self.foreground}'."
            raise BadInputError(msg)


@dataclass(frozen=True)
class ScoringOptions:
    """How the anomaly map and the image score are made from the reconstruction and segmentation maps.

    Attributes:
        rec_weight: Weight of the reconstruction map in the fused map (1.0 is used when ``stage2.steps == 0``).
        sigma: Gaussian smoothing of the fused map (5×5 kernel; 0: none).
        top_ratio: Share of the highest map values averaged into the image score.
    """

    rec_weight: float = 0.7
    sigma: float = 4.0
    top_ratio: float = 0.01


GROUPS: dict[str, type] = {
    "stage1": StageIOptions,
    "stage2": StageIIOptions,
    "synthesis": SynthesisOptions,
    "scoring": ScoringOptions,
}
"""CRR's constructor argument of each group and the group's dataclass."""

DEFAULT_STAGE1 = StageIOptions()
DEFAULT_STAGE2 = StageIIOptions()
DEFAULT_SYNTHESIS = SynthesisOptions()
DEFAULT_SCORING = ScoringOptions()
DEFAULTS: dict[str, Any] = {
    "stage1": DEFAULT_STAGE1,
    "stage2": DEFAULT_STAGE2,
    "synthesis": DEFAULT_SYNTHESIS,
    "scoring": DEFAULT_SCORING,
}
"""CRR's default of each group argument: these very objects mean "not given" (a flat name may then fill it)."""

_STAGE1_SAME_NAMES = (
    "lr", "final_lr", "warmup_steps", "weight_decay", "gradient_clip", "hard_mining_p", "hard_mining_ramp",
    "hard_mining_factor", "decoder_depth", "groups", "mask_ratio", "dropout", "eval_masking",
)  # fmt: skip

LEGACY_NAMES: dict[str, tuple[str, str]] = {
    "stage1_steps": ("stage1", "steps"),
    "stage1_batch_size": ("stage1", "batch_size"),
    **{name: ("stage1", name) for name in _STAGE1_SAME_NAMES},
    "stage2_steps": ("stage2", "steps"),
    "stage2_batch_size": ("stage2", "batch_size"),
    "seg_lr": ("stage2", "lr"),
    "focal_gamma": ("stage2", "focal_gamma"),
    "seg_base_width": ("stage2", "base_width"),
    "seg_size": ("stage2", "size"),
    "seg_init": ("stage2", "init"),
    **{name: ("synthesis", name) for name in ("texture_dir", "texture_probability", "foreground")},
    **{name: ("scoring", name) for name in ("rec_weight", "sigma", "top_ratio")},
}
"""Flat option name of earlier releases -> ``(group, option)``."""


def _new_name(legacy: str) -> str:
    group, option = LEGACY_NAMES[legacy]
    return f"{group}.{option}"


def _as_dict(group: str, value: Any) -> dict[str, Any]:
    """The options given for ``group`` (its dataclass, a mapping or ``None``) as a dict of the given keys."""
    options_class = GROUPS[group]
    if value is None or value is DEFAULTS[group]:
        return {}
    if isinstance(value, options_class):
        return as_plain_dict(value)
    if isinstance(value, Mapping):
        known = {field.name for field in dataclasses.fields(options_class)}
        unknown = sorted(set(value) - known)
        if unknown:
            msg = f"{group} has no option {', '.join(map(repr, unknown))}: its options are {', '.join(sorted(known))}."
            raise BadInputError(msg)
        return dict(value)
    msg = f"{group} must be a {options_class.__name__}, a dict of its options or None, got {type(value).__name__}."
    raise BadInputError(msg)


def resolve_groups(groups: Mapping[str, Any], legacy: Mapping[str, Any], owner: str = "CRR") -> dict[str, Any]:
    """Each group's dataclass from what was given: the group arguments and any flat names of earlier releases.

    A flat name is put into its group with one ``FutureWarning`` line naming the new names; a name that is neither
    is a ``TypeError`` as Python's own for an unexpected keyword; an option given both ways is a ``TypeError`` too.
    """
    unknown = [name for name in legacy if name not in LEGACY_NAMES]
    if unknown:
        msg = f"{owner}.__init__() got an unexpected keyword argument '{unknown[0]}'"
        raise TypeError(msg)
    given = {group: _as_dict(group, groups.get(group)) for group in GROUPS}
    for name, value in legacy.items():
        group, option = LEGACY_NAMES[name]
        if option in given[group]:
            msg = f"{owner} got {name} and {group}.{option}: give only {group}.{option} ({name} is its old name)."
            raise TypeError(msg)
        given[group][option] = value
    if legacy:
        renamed = ", ".join(f"{name} -> {_new_name(name)}" for name in legacy)
        warnings.warn(
            f"{owner}'s flat options are deprecated, use the option groups ({renamed}; e.g. "
            f"{owner}(stage1={{'steps': ...}}), --model.stage1.steps, YAML stage1: {{steps: ...}}).",
            FutureWarning,
            stacklevel=3,
        )
    return {group: GROUPS[group](**options) for group, options in given.items()}


def as_plain_dict(options: Any) -> dict[str, Any]:
    """A group's dataclass as a plain dict (what the hyperparameters and checkpoints hold)."""
    return dataclasses.asdict(options)


def group_flat_arguments(saved: Mapping[str, Any]) -> dict[str, Any]:
    """Saved hyperparameters with the flat names of earlier releases moved into complete groups.

    Every group present (given or made from flat names) is completed with its defaults, so it compares equal to a
    model's own hyperparameters when the configuration is the same. Other keys are kept as they are.
    """
    upgraded = {key: value for key, value in saved.items() if key not in LEGACY_NAMES}
    moved: dict[str, dict[str, Any]] = {}
    for name, value in saved.items():
        if name in LEGACY_NAMES:
            group, option = LEGACY_NAMES[name]
            moved.setdefault(group, {})[option] = value
    for group, options_class in GROUPS.items():
        if group in moved or isinstance(upgraded.get(group), Mapping | options_class):
            options = {**_as_dict(group, upgraded.get(group)), **moved.get(group, {})}
            upgraded[group] = as_plain_dict(options_class(**options))
    return upgraded


_REFUSED_OPTION = re.compile(r"Option '(\w+)' is not accepted")
_QUOTED_NAME = re.compile(r"'(\w+)'")
_NULL_IN_GROUP = re.compile(r"Parser key \"(" + "|".join(GROUPS) + r")\.(\w+)\":")


def parser_error_hint(message: str) -> str | None:
    """One line for an anomalib CLI parse error about CRR's options, else ``None``.

    Two errors get one: flat option names of earlier releases (``--model.stage1_steps``, or ``stage1_steps:`` in a
    YAML recipe's ``init_args``; every flat name of the refused arguments is listed with its new name), and
    ``null`` given to a group's option on the command line (``--model.stage2.size=null``), which jsonargparse
    4.46 passes on as the string ``'None'``: the hint gives the form that works, ``--model.stage2 '{size: null}'``.
    Only messages about ``anomalib_repair.CRR`` are considered (CRAS and MFRNet have a ``texture_dir`` and ``lr``).
    """
    if not re.search(r"\bCRR\b", message):
        return None
    refused = _REFUSED_OPTION.search(message)
    if refused is not None and refused.group(1) in LEGACY_NAMES:
        given = message[refused.end() :]  # the refused value: for a YAML recipe, all its init_args
        names = [refused.group(1), *(name for name in _QUOTED_NAME.findall(given) if name in LEGACY_NAMES)]
        renamed = ", ".join(f"{name} -> {_new_name(name)}" for name in dict.fromkeys(names))
        return (
            f"CRR's options are grouped now: {renamed} (command line: --model.stage1.steps 500; YAML init_args: "
            "stage1: {steps: 500}; the shipped configs/crr/*.yaml show every group)."
        )
    null = _NULL_IN_GROUP.search(message)
    if null is not None and "Given value: None" in message[null.end() :]:
        group, option = null.groups()
        return (
            f"--model.{group}.{option}=null is read as the text 'None' (a jsonargparse limitation): write "
            f"--model.{group} '{{{option}: null}}' instead (or {option}: null under {group}: in the YAML config)."
        )
    return None
