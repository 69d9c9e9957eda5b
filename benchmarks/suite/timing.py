"""Timing and memory measurements of a worker: latencies, CPU seconds, peak RSS and GPU memory.

:func:`latencies` times a forward at batch 1 and 32 (median and min per image), in turn with the backbone alone
when it is given (the paired floor); :func:`validation_timer` measures the validation pass that ``engine.fit``
ends with, so that it can be subtracted from the training time.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

from .settings import PYPI_BACKBONE, Settings


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (less sensitive than wall time to a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def validation_timer() -> Any:
    """A Lightning callback that sums the wall time of the validation loops (thresholds, on the test set)."""
    from lightning.pytorch import Callback

    class ValidationTimer(Callback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self._start = 0.0

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            del trainer, pl_module
            self._start = time.perf_counter()

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            del trainer, pl_module
            self.seconds += time.perf_counter() - self._start

    return ValidationTimer()


def autocast(settings: Settings) -> Any:
    """The autocast context of the run's precision (``16-mixed``/``bf16-mixed``), else a no-op."""
    import contextlib

    import torch

    dtypes = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
    if settings.precision not in dtypes:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_of(settings).type, dtype=dtypes[settings.precision])


def device_of(settings: Settings) -> Any:
    """The torch device of the run's accelerator."""
    import torch

    return torch.device("cuda" if settings.accelerator == "gpu" else "cpu")


def synchronize(settings: Settings) -> None:
    """Wait for queued GPU work (timings on a GPU are otherwise launch times)."""
    import torch

    if settings.accelerator == "gpu":
        torch.cuda.synchronize()


def ms_per_image(
    forwards: dict[str, Callable[[Any], Any]], images: Any, runs: int, settings: Settings, warmup: int = 3
) -> dict[str, tuple[float, float]]:
    """Median and minimum wall time per image (ms) of each forward, over ``runs`` rounds after warm-up.

    The forwards take turns within every round, so that a method and the backbone floor it is divided by are timed
    under the same conditions (a busy neighbour or a clock change affects both alike).
    """
    import statistics

    import torch

    times: dict[str, list[float]] = {name: [] for name in forwards}
    with torch.inference_mode(), autocast(settings):
        for forward in forwards.values():
            for _ in range(warmup):
                forward(images)
        synchronize(settings)
        for _ in range(runs):
            for name, forward in forwards.items():
                start = time.perf_counter()
                forward(images)
                synchronize(settings)
                times[name].append(1000 * (time.perf_counter() - start) / images.shape[0])
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def latencies(forward: Callable[[Any], Any], settings: Settings, floor: Callable[[Any], Any] | None = None) -> dict:
    """ms/image (median and min) at batch 1 and 32 on pre-processed random S x S images; images/s at batch 32.

    With ``floor`` (the backbone alone), it is timed in turn with ``forward`` and the ratios ``x_backbone_*`` of
    the two are added.
    """
    import torch

    from anomalib_repair.models.base import build_pre_processor

    normalise = build_pre_processor(PYPI_BACKBONE, settings.image_size, settings.image_size).transform
    generator = torch.Generator().manual_seed(settings.seed)
    result: dict[str, float] = {}
    forwards = {"method": forward} if floor is None else {"method": forward, "floor": floor}
    for batch in (1, 32):
        images = normalise(torch.rand(batch, 3, settings.image_size, settings.image_size, generator=generator))
        runs = settings.latency_runs if batch == 1 else max(3, settings.latency_runs // 3)
        timed = ms_per_image(forwards, images.to(device_of(settings)), runs, settings)
        result[f"ms_per_image_b{batch}"], result[f"ms_per_image_b{batch}_min"] = timed["method"]
        if "floor" in timed:
            result[f"floor_ms_per_image_b{batch}"], result[f"floor_ms_per_image_b{batch}_min"] = timed["floor"]
            for suffix in ("", "_min"):
                ratio = result[f"ms_per_image_b{batch}{suffix}"] / result[f"floor_ms_per_image_b{batch}{suffix}"]
                result[f"x_backbone_b{batch}{suffix}"] = ratio
    result["images_per_s_b32"] = 1000 / result["ms_per_image_b32"]
    return result


def gpu_memory() -> dict[str, float]:
    """Peak CUDA memory allocated by this process (MB), when a GPU is in use."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20}
