"""File-to-file conversions (what ``tools/convert_dataset.py`` runs): read, convert, write,
validate."""
from __future__ import annotations

import os
from typing import Any

from .common import ConversionReport, read_json, read_jsonl, validate_mdetr, write_json, write_jsonl
from .detection import coco_detection_images, detection_to_mdetr
from .odvg import (
    mdetr_to_odvg_detection,
    mdetr_to_odvg_grounding,
    odvg_detection_images,
    odvg_grounding_to_mdetr,
    odvg_variant,
    read_label_map,
)

__all__ = ["convert_coco_to_mdetr", "convert_mdetr_to_odvg", "convert_odvg_to_mdetr",
           "default_label_map_path"]


def convert_coco_to_mdetr(
    coco_json: str,
    out_json: str,
    *,
    image_root: str | None = None,
    tokenizer: Any = None,
    samples: int = 20,
    **caption_options: Any,
) -> ConversionReport:
    """COCO-format detection json -> MDETR json (see :func:`detection_to_mdetr` for the options).

    The output is checked like ``datasets/register.py --check`` (images under ``image_root`` when
    given; positive maps with ``tokenizer`` when given); the report holds the counts, warnings and
    that validation.
    """
    report = ConversionReport()
    images, categories = coco_detection_images(read_json(coco_json), coco_json)
    data = detection_to_mdetr(images, categories, report=report, **caption_options)
    write_json(out_json, data)
    report.finish()
    report.validation = validate_mdetr(out_json, image_root, samples=samples, tokenizer=tokenizer)
    return report


def convert_odvg_to_mdetr(
    odvg_file: str,
    out_json: str,
    *,
    label_map: str | None = None,
    image_root: str | None = None,
    tokenizer: Any = None,
    samples: int = 20,
    **caption_options: Any,
) -> ConversionReport:
    """ODVG jsonl (either variant, detected from the records) -> MDETR json.

    Detection records need ``label_map`` (MMDetection's ``*_label_map.json``; without it the names
    come from the instances) and accept the caption options of :func:`detection_to_mdetr`.
    """
    report = ConversionReport()
    records = read_jsonl(odvg_file)
    variant = odvg_variant(records, odvg_file)
    report.counts["ODVG records"] = len(records)
    if variant == "grounding":
        if caption_options:
            raise ValueError(f"caption options {sorted(caption_options)} apply to ODVG detection "
                             f"files only; {odvg_file} is a grounding file")
        data = odvg_grounding_to_mdetr(records, odvg_file, report)
    else:
        labels = read_label_map(label_map) if label_map else None
        images, categories = odvg_detection_images(records, labels, odvg_file, report)
        data = detection_to_mdetr(images, categories, report=report, **caption_options)
    write_json(out_json, data)
    report.finish()
    report.validation = validate_mdetr(out_json, image_root, samples=samples, tokenizer=tokenizer)
    return report


def default_label_map_path(odvg_file: str) -> str:
    """``<name>_label_map.json`` next to ``<name>.jsonl``, as MMDetection names label maps."""
    return os.path.splitext(odvg_file)[0] + "_label_map.json"


def convert_mdetr_to_odvg(
    mdetr_json: str,
    out_file: str,
    *,
    detection: bool = False,
    label_map_out: str | None = None,
    image_root: str | None = None,
    tokenizer: Any = None,
    samples: int = 20,
) -> ConversionReport:
    """MDETR json -> ODVG jsonl: the grounding variant, or with ``detection`` the detection variant
    and its label map (``label_map_out``, default :func:`default_label_map_path`).

    The written file is read back with the ODVG reader and checked like an MDETR dataset.
    """
    report = ConversionReport()
    data = read_json(mdetr_json)
    if detection:
        records, label_map = mdetr_to_odvg_detection(data, report)
        label_map_out = label_map_out or default_label_map_path(out_file)
        write_json(label_map_out, label_map)
    else:
        records = mdetr_to_odvg_grounding(data, report)
    write_jsonl(out_file, records)
    report.finish()
    back = ConversionReport()  # the read-back's own notes are not the user's concern
    written = read_jsonl(out_file)
    if detection:
        images, categories = odvg_detection_images(written, read_label_map(label_map_out),
                                                   out_file, back)
        data = detection_to_mdetr(images, categories, report=back)
    else:
        data = odvg_grounding_to_mdetr(written, out_file, back)
    report.validation = validate_mdetr(data, image_root, samples=samples, tokenizer=tokenizer)
    return report
