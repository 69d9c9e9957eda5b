"""The models: one folder each, in anomalib's layout."""

from anomalib_repair.models.cras import CRAS

__all__ = ["CRAS"]
