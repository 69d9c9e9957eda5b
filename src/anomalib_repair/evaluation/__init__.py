"""Per-category evaluation with anomalib's metrics, and the results tables."""

from anomalib_repair.evaluation.metrics import METRICS, MetricSpec
from anomalib_repair.evaluation.per_category import PerCategoryEvaluator
from anomalib_repair.evaluation.post_processing import PerCategoryPostProcessor
from anomalib_repair.evaluation.table import ResultsTable

__all__ = ["METRICS", "MetricSpec", "PerCategoryEvaluator", "PerCategoryPostProcessor", "ResultsTable"]
