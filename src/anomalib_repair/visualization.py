"""Anomaly-map pictures, saved per category so that categories with equal file names do not overwrite each other.

anomalib's ``ImageVisualizer`` names each picture after the image's folders below the dataset's category folder.
A unified run has many categories whose files share names (``bottle/test/broken_large/000.png`` and
``cable/test/…/000.png``), so this visualizer writes ``images/<category>/<folders>/<name>.png``, the category
looked up through :mod:`anomalib_repair.data.category`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item

from anomalib_repair.data.category import category_index_for


class CategoryImageVisualizer(ImageVisualizer):
    """anomalib's image visualizer, saving test pictures under one folder per category."""

    def on_test_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Save one picture per test image under ``<default_root_dir>/images/<category>/``."""
        del pl_module, outputs, batch_idx, dataloader_idx
        output_dir = Path(self.output_dir or Path(trainer.default_root_dir) / "images")
        index = category_index_for(getattr(trainer, "datamodule", None))
        for item in batch:
            picture = visualize_image_item(
                item,
                fields=self.fields,
                overlay_fields=self.overlay_fields,
                field_size=self.field_size,
                fields_config=self.fields_config,
                overlay_fields_config=self.overlay_fields_config,
                text_config=self.text_config,
            )
            if picture is None:
                continue
            path = str(item.image_path or "")
            category = index.names_of([path])[0]
            filename = generate_output_filename(input_path=path, output_path=output_dir / category, category=category)
            picture.save(filename)
