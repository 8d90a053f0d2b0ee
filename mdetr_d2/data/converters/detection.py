"""Detection data (boxes with category names) -> MDETR json: captions made of category names.

A detection dataset has no text; MDETR learns from (image, caption) pairs. Each image becomes one
datapoint whose caption lists the names of the categories present (``names_per_caption=0``), or one
datapoint per group of ``names_per_caption`` categories; ``names_per_caption=1`` with
``negatives=-1`` on an LVIS file gives the layout of MDETR's LVIS fine-tuning data (reference
§5.10): one datapoint per category present, with all its boxes, and one box-less datapoint per
verified-absent category. Absent categories ("negatives") may be mixed into the captions: the
model must then predict "no object" for their words. Every box's ``tokens_positive`` is the span of
its category's name in the caption written, and ``tokens_positive_eval`` holds one phrase per
category present.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any, Iterable, Mapping, Sequence

from ...structures import clean_category_name
from ..datasets.mdetr_json import DatasetFormatError
from .common import ConversionReport

__all__ = ["DetectionImage", "coco_detection_images", "detection_to_mdetr"]


@dataclasses.dataclass
class DetectionImage:
    """One image of a detection dataset, format-neutral.

    Attributes:
        entry: the image fields every datapoint of the image carries (``file_name``, ``height``,
            ``width`` and whatever else the source had, e.g. ``original_id``).
        annotations: COCO-style annotations (``bbox`` [x, y, w, h], ``category_id``, and any other
            field of the source, kept as they are).
        negative_category_ids: categories verified absent from the image (LVIS
            ``neg_category_ids``); None when the source does not say.
        excluded_category_ids: categories never used as negatives (LVIS
            ``not_exhaustive_category_ids``: present but not all boxes annotated).
    """

    entry: dict
    annotations: list[dict]
    negative_category_ids: list[int] | None = None
    excluded_category_ids: frozenset = frozenset()


def _lvis_file_name(image: Mapping) -> str | None:
    # LVIS v1 has no file_name: its images are the COCO 2017 ones, "train2017/<file>" as the
    # official LVIS conversion writes it (reference §5.10).
    url = image.get("coco_url")
    return "/".join(url.split("/")[-2:]) if isinstance(url, str) and "/" in url else None


def coco_detection_images(
    coco: Mapping, source: str = "COCO json"
) -> tuple[list[DetectionImage], list[dict]]:
    """Read a COCO-format detection json (COCO, LVIS, Objects365, ...) into :class:`DetectionImage`.

    Every image and annotation field is kept (the COCO ``id`` as ``original_id``), except LVIS's
    ``neg_category_ids`` / ``not_exhaustive_category_ids``, which decide the negatives instead (when
    a file lists them, an image without the list has no negative).

    Returns:
        the images in file order and the categories (``id``, ``name`` and their other fields).
    """
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise DatasetFormatError(
                f"{source}: top level: field {key!r} is missing: not a COCO detection json "
                "(expected 'images', 'annotations' and 'categories' lists)"
            )
    categories = []
    for i, category in enumerate(coco["categories"]):
        if not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            raise DatasetFormatError(
                f"{source}: categories[{i}]: fields 'id' (int) and 'name' (str) are required, "
                f"got {category!r}"
            )
        categories.append(dict(category))
    known = {c["id"] for c in categories}
    by_image: dict[Any, list[dict]] = {}
    for i, ann in enumerate(coco["annotations"]):
        where = f"{source}: annotation id={ann.get('id', i)!r}"
        if ann.get("category_id") not in known:
            raise DatasetFormatError(
                f"{where}: field 'category_id' is {ann.get('category_id')!r}, not a category id"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DatasetFormatError(f"{where}: field 'bbox' must be [x, y, w, h], got {bbox!r}")
        out = {k: v for k, v in ann.items() if k not in ("id", "image_id")}
        if "id" in ann:
            out["original_id"] = ann["id"]
        by_image.setdefault(ann.get("image_id"), []).append(out)
    # An LVIS-style file lists verified-absent categories per image: only those are negatives.
    lists_negatives = any("neg_category_ids" in image for image in coco["images"])
    images = []
    for image in coco["images"]:
        entry = {k: v for k, v in image.items()
                 if k not in ("id", "neg_category_ids", "not_exhaustive_category_ids")}
        entry["original_id"] = image.get("id")
        if "file_name" not in entry:
            file_name = _lvis_file_name(image)
            if file_name is None:
                raise DatasetFormatError(
                    f"{source}: image id={image.get('id')!r}: field 'file_name' is missing "
                    "(and no 'coco_url' to take it from)"
                )
            entry["file_name"] = file_name
        images.append(DetectionImage(
            entry=entry,
            annotations=by_image.get(image.get("id"), []),
            negative_category_ids=image.get("neg_category_ids", [] if lists_negatives else None),
            excluded_category_ids=frozenset(image.get("not_exhaustive_category_ids", ())),
        ))
    return images, categories


def _chunks(items: Sequence, size: int) -> list[Sequence]:
    if size <= 0:
        return [items]
    return [items[i:i + size] for i in range(0, len(items), size)]


def _caption(names: Sequence[str], separator: str) -> tuple[str, list[list[int]]]:
    """The names joined by ``separator`` and each name's ``[begin, end)`` span."""
    spans, parts, position = [], [], 0
    for i, name in enumerate(names):
        if i:
            parts.append(separator)
            position += len(separator)
        spans.append([position, position + len(name)])
        parts.append(name)
        position += len(name)
    return "".join(parts), spans


def detection_to_mdetr(
    images: Iterable[DetectionImage],
    categories: Sequence[Mapping],
    *,
    names_per_caption: int = 0,
    negatives: int = 0,
    seed: int = 0,
    separator: str = ". ",
    clean_names: bool = True,
    dataset_name: str | None = None,
    report: ConversionReport | None = None,
) -> dict:
    """Detection images -> an MDETR json (a dict), captions made of category names.

    Args:
        images: the images (:func:`coco_detection_images`, or an ODVG detection file).
        categories: ``{"id", "name", ...}`` of every category; copied to the output.
        names_per_caption: 0: one datapoint per image, all its names in one caption; k > 0: one
            datapoint per group of k names (1: one per category, as MDETR's LVIS data).
        negatives: absent categories sampled per image and named in the captions without boxes
            (-1: all the image's ``neg_category_ids``). Drawn from the image's verified-absent
            categories when the source lists them (LVIS), else from all categories not present
            (never from ``not_exhaustive_category_ids``).
        seed: seed of the negative sampling.
        separator: text between two names of a caption.
        clean_names: write names as MDETR's LVIS code does (parentheses and "_" removed, see
            :func:`mdetr_d2.structures.clean_category_name`), stripped.
        dataset_name: written as each datapoint's ``dataset_name`` when given.
        report: counts are added to it.

    Returns:
        the MDETR json: ``images`` (one per datapoint, sequential ids, the source image's fields
        kept), ``annotations`` (the source's fields kept, ``tokens_positive`` added, sequential ids,
        boxes in their source order), ``categories``.
    """
    report = report if report is not None else ConversionReport()
    names = {}
    for c in categories:
        name = clean_category_name(c["name"]).strip() if clean_names else c["name"]
        if not name:
            raise ValueError(f"category {c['id']} ({c['name']!r}) has an empty name once cleaned")
        names[c["id"]] = name
    all_ids = sorted(names)
    rng = random.Random(seed)
    out_images, out_annotations = [], []
    for image in images:
        report.count("images read")
        present = {a["category_id"] for a in image.annotations}
        candidates = (
            [c for c in image.negative_category_ids if c in names]
            if image.negative_category_ids is not None
            else [c for c in all_ids if c not in present]
        )
        candidates = [c for c in candidates if c not in image.excluded_category_ids]
        count = len(candidates) if negatives < 0 else min(negatives, len(candidates))
        chosen = sorted(rng.sample(candidates, count)) if count else []
        ordered = sorted(present | set(chosen))
        if not ordered:
            report.count("images skipped (no box and no negative to make a caption)")
            continue
        for group in _chunks(ordered, names_per_caption):
            caption, spans = _caption([names[c] for c in group], separator)
            span_of = dict(zip(group, spans))
            datapoint_id = len(out_images)
            entry = dict(image.entry)
            entry.update(id=datapoint_id, caption=caption)
            phrases = [[span_of[c]] for c in group if c in present]
            if phrases:
                entry["tokens_positive_eval"] = phrases
            if dataset_name:
                entry["dataset_name"] = dataset_name
            out_images.append(entry)
            boxes = 0
            for ann in image.annotations:
                if ann["category_id"] not in span_of:
                    continue
                out = dict(ann)
                out.update(id=len(out_annotations), image_id=datapoint_id,
                           tokens_positive=[span_of[ann["category_id"]]])
                out_annotations.append(out)
                boxes += 1
            report.count("datapoints")
            report.count("boxes", boxes)
            report.count("negative names", sum(1 for c in group if c not in present))
            if not boxes:
                report.count("datapoints without boxes")
    return {"images": out_images, "annotations": out_annotations,
            "categories": [dict(c) for c in categories]}
