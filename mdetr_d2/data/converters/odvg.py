"""ODVG <-> MDETR json.

ODVG is the jsonl format of MMDetection's Grounding DINO family (``ODVGDataset``; written by its
``coco2odvg.py`` and ``goldg2odvg.py``): one json object per line and image, with ``filename``,
``height``, ``width`` and either

* ``grounding`` (the "VG" variant): ``caption`` and ``regions``, each region a ``bbox``
  ``[x1, y1, x2, y2]`` or a list of such boxes, a ``phrase`` (a string, or a list of strings when
  its spans are not contiguous) and ``tokens_positive`` (``[begin, end)`` character spans of the
  caption); or
* ``detection`` (the "OD" variant): ``instances``, each a ``bbox`` ``[x1, y1, x2, y2]``, a ``label``
  (a key of a separate label-map json ``{"0": "person", ...}``) and its ``category`` name.

The grounding variant and MDETR json hold the same information for one image-caption pair: the
conversion is lossless both ways (a region with several boxes becomes several annotations sharing
its spans; a phrase that its spans do not spell is kept in the annotation's ``phrase`` field).
Detection records become MDETR datapoints through :func:`detection_to_mdetr` (captions made of
category names). What a format cannot hold is named in a warning of the report, never dropped
silently.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ..datasets.mdetr_json import DatasetFormatError
from .common import ConversionReport, is_number, sub, xywh_to_xyxy, xyxy_to_xywh
from .detection import DetectionImage

__all__ = [
    "mdetr_to_odvg_detection",
    "mdetr_to_odvg_grounding",
    "odvg_detection_images",
    "odvg_grounding_to_mdetr",
    "odvg_variant",
    "phrase_of",
    "read_label_map",
]

_RECORD_KEYS = ("filename", "height", "width")
_REGION_KEYS = ("bbox", "phrase", "tokens_positive")
_INSTANCE_KEYS = ("bbox", "label", "category")
# MDETR fields an ODVG grounding record holds (or derives: ids, area of a plain box, crowd flag 0).
_MDETR_IMAGE_KEYS = {"id", "file_name", "height", "width", "caption"}
_MDETR_ANNOTATION_KEYS = {"id", "image_id", "bbox", "tokens_positive", "tokens", "phrase",
                          "iscrowd", "area", "category_id"}
_DROP_REASON = "MDETR json has no place for it"


def phrase_of(caption: str, spans: Sequence[Sequence[int]]) -> str | list[str]:
    """The text of ``spans`` as ODVG writes a region's ``phrase``.

    Spans are read in caption order; a span that starts one space after the previous one ends
    continues the same piece ("two" + "surfers" -> "two surfers"). One piece gives a string, several
    a list of strings.
    """
    pieces: list[str] = []
    previous_end = None
    for begin, end in sorted(spans, key=lambda span: span[0]):
        text = caption[begin:end]
        if pieces and begin == previous_end + 1 and caption[previous_end] == " ":
            pieces[-1] += " " + text
        else:
            pieces.append(text)
        previous_end = end
    return pieces[0] if len(pieces) == 1 else pieces


def _fail(source: str, line: int, message: str) -> DatasetFormatError:
    return DatasetFormatError(f"{source}: record {line}: {message}")


def _box(value: Any, source: str, line: int, field: str) -> list:
    if not (isinstance(value, list) and len(value) == 4 and all(is_number(v) for v in value)):
        raise _fail(source, line, f"field {field!r} must be [x1, y1, x2, y2], got {value!r}")
    return value


def _spans(value: Any, caption: str, source: str, line: int) -> list:
    ok = isinstance(value, list) and all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) for v in s)
        and 0 <= s[0] <= s[1] <= len(caption)
        for s in value
    )
    if not ok:
        raise _fail(source, line, "field 'tokens_positive' must be [begin, end) spans of the "
                    f"caption {caption!r}, e.g. [[0, 3]], got {value!r}")
    return value


def _check_record(record: Mapping, source: str, line: int, report: ConversionReport) -> None:
    if not isinstance(record.get("filename"), str) or not record["filename"]:
        raise _fail(source, line, "field 'filename' is missing (the image path)")
    for key in ("height", "width"):
        if not isinstance(record.get(key), int):
            raise _fail(source, line, f"field {key!r} must be the image size in pixels (integer)")
    for key in set(record) - {*_RECORD_KEYS, "grounding", "detection"}:
        report.dropped(f"ODVG field {key!r}", "records", _DROP_REASON)


def odvg_variant(records: Sequence[Mapping], source: str = "ODVG file") -> str:
    """"grounding" or "detection": the variant every record of the file follows."""
    variants = {"grounding" if "grounding" in r else "detection" if "detection" in r else None
                for r in records}
    if None in variants:
        line = next(i for i, r in enumerate(records, 1)
                    if "grounding" not in r and "detection" not in r)
        raise _fail(source, line, "has neither 'grounding' nor 'detection': not an ODVG record")
    if len(variants) > 1:
        raise DatasetFormatError(f"{source}: mixes grounding and detection records")
    return variants.pop() if variants else "grounding"


def odvg_grounding_to_mdetr(
    records: Sequence[Mapping], source: str = "ODVG file", report: ConversionReport | None = None
) -> dict:
    """ODVG grounding records -> an MDETR json (a dict): one datapoint per record."""
    report = report if report is not None else ConversionReport()
    images, annotations = [], []
    for line, record in enumerate(records, 1):
        _check_record(record, source, line, report)
        grounding = record["grounding"]
        caption = grounding.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise _fail(source, line, "field 'caption' (in 'grounding') is missing or empty")
        regions = grounding.get("regions", [])
        if not isinstance(regions, list):
            raise _fail(source, line, "field 'regions' (in 'grounding') must be a list")
        for key in set(grounding) - {"caption", "regions"}:
            report.dropped(f"ODVG field 'grounding.{key}'", "records", _DROP_REASON)
        image_id = len(images)
        images.append({"id": image_id, "file_name": record["filename"], "height": record["height"],
                       "width": record["width"], "caption": caption})
        for region in regions:
            spans = _spans(region.get("tokens_positive"), caption, source, line)
            bbox = region.get("bbox")
            nested = isinstance(bbox, list) and bbox and isinstance(bbox[0], list)
            boxes = bbox if nested else [bbox]
            if bbox == []:
                report.dropped("ODVG region without a box", "regions",
                               "MDETR boxes are annotations")
                continue
            for key in set(region) - set(_REGION_KEYS):
                report.dropped(f"ODVG field 'regions.{key}'", "regions", _DROP_REASON)
            phrase = region.get("phrase")
            for box in boxes:
                x, y, w, h = xyxy_to_xywh(_box(box, source, line, "bbox"))
                ann = {"id": len(annotations), "image_id": image_id, "bbox": [x, y, w, h],
                       "area": _area(w, h), "iscrowd": 0, "category_id": 1,
                       "tokens_positive": spans}
                if phrase is not None and phrase != phrase_of(caption, spans):
                    ann["phrase"] = phrase  # not spelled by its spans: kept for the way back
                annotations.append(ann)
        report.count("datapoints")
    report.count("boxes", len(annotations))
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "object"}]}


def _area(w: float, h: float) -> float:
    return w * h if isinstance(w, int) and isinstance(h, int) else round(w * h, 10)


def read_label_map(path_or_map: str | Mapping) -> dict[int, str]:
    """An ODVG label map ``{"0": "person", ...}`` (a path or the loaded dict) as
    ``{0: "person"}``."""
    if isinstance(path_or_map, str):
        with open(path_or_map, encoding="utf-8") as f:
            path_or_map = json.load(f)
    try:
        return {int(k): str(v) for k, v in path_or_map.items()}
    except (AttributeError, ValueError):
        raise DatasetFormatError(
            f"label map must be a json object {{\"0\": \"person\", ...}}, got {path_or_map!r:.80}"
        ) from None


def odvg_detection_images(
    records: Sequence[Mapping],
    label_map: Mapping[int, str] | None = None,
    source: str = "ODVG file",
    report: ConversionReport | None = None,
) -> tuple[list[DetectionImage], list[dict]]:
    """ODVG detection records -> :class:`DetectionImage` and categories, for
    :func:`detection_to_mdetr`. Category ids are ``label + 1`` (COCO's convention: ids from 1).

    Without ``label_map`` the names come from the instances' ``category`` fields (categories no
    image contains are then unknown, said in a warning).
    """
    report = report if report is not None else ConversionReport()
    if label_map is None:
        label_map = {}
        for record in records:
            for inst in record.get("detection", {}).get("instances", []):
                if isinstance(inst.get("label"), int) and isinstance(inst.get("category"), str):
                    label_map.setdefault(inst["label"], inst["category"])
        report.warn("no label map given: category names taken from the instances' 'category' "
                    "fields; categories absent from every image are not listed")
    labels = sorted(label_map)
    if labels != list(range(len(labels))):
        report.warn(f"labels are not 0..{len(labels) - 1} ({labels[:10]}...): written back to "
                    "ODVG they are numbered 0..K-1 in label order")
    images = []
    for line, record in enumerate(records, 1):
        _check_record(record, source, line, report)
        instances = record["detection"].get("instances", [])
        annotations = []
        for inst in instances:
            label = inst.get("label")
            if label not in label_map:
                raise _fail(source, line, f"field 'label' is {label!r}, not a key of the label map "
                            f"(labels {labels[:10]}...)")
            if "category" in inst and inst["category"] != label_map[label]:
                report.dropped("ODVG field 'category' differing from the label map", "instances",
                               "the label map's name is used")
            for key in set(inst) - set(_INSTANCE_KEYS):
                report.dropped(f"ODVG field 'instances.{key}'", "instances", _DROP_REASON)
            x, y, w, h = xyxy_to_xywh(_box(inst.get("bbox"), source, line, "bbox"))
            annotations.append({"bbox": [x, y, w, h], "area": _area(w, h), "iscrowd": 0,
                                "category_id": label + 1})
        entry = {"file_name": record["filename"], "height": record["height"],
                 "width": record["width"]}
        images.append(DetectionImage(entry=entry, annotations=annotations))
    categories = [{"id": label + 1, "name": label_map[label]} for label in labels]
    return images, categories


def _by_image(data: Mapping) -> dict[Any, list[dict]]:
    grouped: dict[Any, list[dict]] = {}
    for ann in data.get("annotations", []):
        grouped.setdefault(ann.get("image_id"), []).append(ann)
    return grouped


def _size(entry: Mapping, key: str) -> int:
    try:
        return int(entry[key])  # strings in the released Flickr files
    except (KeyError, TypeError, ValueError):
        raise DatasetFormatError(
            f"image entry id={entry.get('id')!r}: field {key!r} is missing or not an integer"
        ) from None


def _note_dropped_fields(entry: Mapping, anns: Sequence[Mapping], report: ConversionReport,
                         image_keys: set, annotation_keys: set, target: str) -> None:
    for key in set(entry) - image_keys:
        report.dropped(f"MDETR field {key!r}", "image entries", f"{target} has no place for it")
    for ann in anns:
        for key in set(ann) - annotation_keys:
            report.dropped(f"MDETR field {key!r}", "annotations", f"{target} has no place for it")


def mdetr_to_odvg_grounding(data: Mapping, report: ConversionReport | None = None) -> list[dict]:
    """An MDETR json (a dict) -> ODVG grounding records, one per datapoint.

    Annotations sharing a phrase and spans become one region (with a list of boxes, as
    ``goldg2odvg.py`` writes them); boxes are written as they are (MMDetection's reader drops
    degenerate ones itself). Crowd boxes and fields ODVG has no place for are named in warnings.
    """
    report = report if report is not None else ConversionReport()
    by_image = _by_image(data)
    category_ids = set()
    records = []
    for entry in data["images"]:
        caption = entry.get("caption")
        if not isinstance(caption, str):
            raise DatasetFormatError(
                f"image entry id={entry.get('id')!r}: field 'caption' is missing")
        anns = by_image.get(entry.get("id"), [])
        _note_dropped_fields(entry, anns, report, _MDETR_IMAGE_KEYS, _MDETR_ANNOTATION_KEYS, "ODVG")
        regions: dict[str, dict] = {}
        for ann in anns:
            if ann.get("iscrowd", 0) == 1:
                report.dropped("MDETR crowd annotation", "annotations", "ODVG has no crowd flag")
                continue
            category_ids.add(ann.get("category_id", 1))
            x, y, w, h = ann["bbox"]
            if "area" in ann and sub(ann["area"], _area(w, h)) != 0:
                report.dropped("MDETR field 'area' (not the box area)", "annotations",
                               "ODVG has no place for it")
            spans = ann.get("tokens_positive", ann.get("tokens"))
            phrase = ann.get("phrase", phrase_of(caption, spans))
            key = json.dumps([phrase, spans])
            box = xywh_to_xyxy(ann["bbox"])
            if key not in regions:
                regions[key] = {"bbox": box, "phrase": phrase, "tokens_positive": spans}
                continue
            region = regions[key]
            region["bbox"] = (region["bbox"] if isinstance(region["bbox"][0], list)
                              else [region["bbox"]]) + [box]
        records.append({"filename": entry["file_name"], "height": _size(entry, "height"),
                        "width": _size(entry, "width"),
                        "grounding": {"caption": caption, "regions": list(regions.values())}})
        report.count("records")
        report.count("regions", len(regions))
    if len(category_ids) > 1:
        report.warn(f"MDETR field 'category_id' (annotations): {len(category_ids)} categories, "
                    "but ODVG grounding regions have no class; write the detection variant to "
                    "keep them")
    return records


def mdetr_to_odvg_detection(
    data: Mapping, report: ConversionReport | None = None
) -> tuple[list[dict], dict[str, str]]:
    """An MDETR json (a dict) -> ODVG detection records (one per image file) and the label map.

    Datapoints of the same ``file_name`` are merged; a box repeated by several captions of one
    image is written once. Labels are the categories' positions in id order (0..K-1, as
    ``coco2odvg.py`` numbers COCO's 80 categories). Captions and spans have no place in this
    variant (a warning says so).
    """
    report = report if report is not None else ConversionReport()
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    if not categories:
        raise DatasetFormatError("MDETR json has no 'categories': the detection variant needs them")
    label_of = {c["id"]: i for i, c in enumerate(categories)}
    by_image = _by_image(data)
    records: dict[str, dict] = {}
    seen: dict[str, set] = {}
    keep = {"id", "file_name", "height", "width"}
    for entry in data["images"]:
        anns = by_image.get(entry.get("id"), [])
        _note_dropped_fields(entry, anns, report, keep,
                             {"id", "image_id", "bbox", "iscrowd", "area", "category_id"},
                             "ODVG detection")
        file_name = entry["file_name"]
        if file_name not in records:
            records[file_name] = {"filename": file_name, "height": _size(entry, "height"),
                                  "width": _size(entry, "width"), "detection": {"instances": []}}
            seen[file_name] = set()
        instances = records[file_name]["detection"]["instances"]
        for ann in anns:
            if ann.get("iscrowd", 0) == 1:
                report.dropped("MDETR crowd annotation", "annotations", "ODVG has no crowd flag")
                continue
            category_id = ann.get("category_id")
            if category_id not in label_of:
                raise DatasetFormatError(f"annotation id={ann.get('id')!r}: field 'category_id' is "
                                         f"{category_id!r}, not one of the json's categories")
            key = (tuple(ann["bbox"]), category_id)
            if key in seen[file_name]:
                report.count("repeated boxes merged")
                continue
            seen[file_name].add(key)
            instances.append({"bbox": xywh_to_xyxy(ann["bbox"]), "label": label_of[category_id],
                              "category": categories[label_of[category_id]]["name"]})
    report.count("records", len(records))
    report.count("boxes", sum(len(r["detection"]["instances"]) for r in records.values()))
    label_map = {str(i): c["name"] for i, c in enumerate(categories)}
    return list(records.values()), label_map
