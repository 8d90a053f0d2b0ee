"""Converters from the dataset formats peers use to MDETR json and back.

* COCO-format detection json (COCO, LVIS, Objects365, ...) -> MDETR json, captions made of
  category names (:func:`convert_coco_to_mdetr`, :func:`detection_to_mdetr`);
* ODVG (MMDetection's Grounding DINO format, grounding and detection variants) <-> MDETR json
  (:func:`convert_odvg_to_mdetr`, :func:`convert_mdetr_to_odvg`).

Every conversion reports its counts, names in warnings what the target format cannot hold, and
validates its output with the checks of ``datasets/register.py --check``.
``tools/convert_dataset.py`` is the command line.
"""
from .common import ConversionReport
from .convert import (
    convert_coco_to_mdetr,
    convert_mdetr_to_odvg,
    convert_odvg_to_mdetr,
    default_label_map_path,
)
from .detection import DetectionImage, coco_detection_images, detection_to_mdetr
from .odvg import (
    mdetr_to_odvg_detection,
    mdetr_to_odvg_grounding,
    odvg_detection_images,
    odvg_grounding_to_mdetr,
    phrase_of,
    read_label_map,
)

__all__ = [
    "ConversionReport",
    "DetectionImage",
    "coco_detection_images",
    "convert_coco_to_mdetr",
    "convert_mdetr_to_odvg",
    "convert_odvg_to_mdetr",
    "default_label_map_path",
    "detection_to_mdetr",
    "mdetr_to_odvg_detection",
    "mdetr_to_odvg_grounding",
    "odvg_detection_images",
    "odvg_grounding_to_mdetr",
    "phrase_of",
    "read_label_map",
]
