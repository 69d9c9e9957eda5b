"""``python -m anomalib_repair.demo``: the quick start (:mod:`anomalib_repair.demo.quickstart`)."""

from anomalib_repair.demo.quickstart import main

raise SystemExit(main())
