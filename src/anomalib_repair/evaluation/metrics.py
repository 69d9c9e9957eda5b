"""The metric set reported for every category, built from anomalib's metric classes."""

from __future__ import annotations

from dataclasses import dataclass

from anomalib.metrics import AUPR, AUPRO, AUROC, AnomalibMetric, F1Max


@dataclass(frozen=True)
class MetricSpec:
    """One reported metric: its logged key, its column title and how to build it."""

    key: str
    title: str
    level: str  # "image" or "pixel"

    def build(self, aupro_fpr_limit: float = 0.3) -> AnomalibMetric:
        """Create a fresh anomalib metric for this spec."""
        fields = ["pred_score", "gt_label"] if self.level == "image" else ["anomaly_map", "gt_mask"]
        prefix = f"{self.level}_"
        kind = self.key.removeprefix(prefix)
        strict = self.level == "image"
        if kind == "AUROC":
            return AUROC(fields=fields, prefix=prefix, strict=strict)
        if kind == "AP":
            return _renamed(AUPR(fields=fields, prefix=prefix, strict=strict), self.key)
        if kind == "F1Max":
            return F1Max(fields=fields, prefix=prefix, strict=strict)
        if kind == "AUPRO":
            return AUPRO(fields=fields, prefix=prefix, strict=strict, fpr_limit=aupro_fpr_limit)
        msg = f"Unknown metric {self.key}"
        raise ValueError(msg)


def _renamed(metric: AnomalibMetric, name: str) -> AnomalibMetric:
    metric.name = name
    return metric


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("image_AUROC", "I-AUROC", "image"),
    MetricSpec("image_AP", "I-AP", "image"),
    MetricSpec("image_F1Max", "I-F1max", "image"),
    MetricSpec("pixel_AUROC", "P-AUROC", "pixel"),
    MetricSpec("pixel_AP", "P-AP", "pixel"),
    MetricSpec("pixel_F1Max", "P-F1max", "pixel"),
    MetricSpec("pixel_AUPRO", "AUPRO", "pixel"),
)
"""Image AUROC, AP and F1-max; pixel AUROC, AP and F1-max; AUPRO (FPR limit 0.3)."""
