"""The demo: a generated anomaly-detection dataset in MVTec AD layout, and a quick start that trains on it.

- :mod:`~anomalib_repair.demo.primitives`: noise, colours, backgrounds and shadows the pictures are made of;
- :mod:`~anomalib_repair.demo.scenes`: the four categories drawn defect-free (``weave``, ``grain``, ``disc``,
  ``capsule``);
- :mod:`~anomalib_repair.demo.defects`: the three defects (``scratch``, ``hole``, ``stain``) and their masks;
- :mod:`~anomalib_repair.demo.samples`: one image with its own random stream, good or defective with its mask;
- :mod:`~anomalib_repair.demo.dataset`: the files on disk (resumable, checked against the parameters),
  :func:`generate_demo_dataset` (``python -m anomalib_repair.demo.dataset --root DIR``);
- :mod:`~anomalib_repair.demo.quickstart`: one unified CRAS model trained and tested on every demo category
  (``python -m anomalib_repair.demo`` or ``anomalib-repair-demo``).
"""

from anomalib_repair.demo.dataset import DEFECT_TYPES, DEMO_CATEGORIES, generate_demo_dataset

__all__ = ["DEFECT_TYPES", "DEMO_CATEGORIES", "generate_demo_dataset"]
