"""Loader for MDETR-format COCO json files and the one-call registration of such a dataset.

In an MDETR json, one "image" entry is one image-caption pair (reference §5.1): the same physical image
appears once per caption with a different ``id``. Each entry becomes one Detectron2 dataset dict.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Any, Callable, Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

__all__ = [
    "MDETR_DATASET_NAMES",
    "DatasetFormatError",
    "load_mdetr_json",
    "load_clevr_questions",
    "load_lvis_v1_json",
    "register_mdetr_json",
    "register_mdetr_dataset",
    "dataset_root",
]

# Every dataset registered through this module, in registration order (``datasets/register.py --check``).
MDETR_DATASET_NAMES: list[str] = []

# Image-level keys copied as-is when present (ids for the evaluators, QA targets as raw strings).
_IMAGE_ID_KEYS = ("original_id", "original_img_id", "sentence_id", "task_id", "questionId")
_IMAGE_QA_KEYS = ("answer", "question_type")

# CLEVR images all have this size; the question-only json files do not store it.
CLEVR_IMAGE_HW = (320, 480)


class DatasetFormatError(ValueError):
    """An annotation file does not follow the MDETR json format; the message names file, record, field."""


def dataset_root() -> str:
    """Root of all MDETR datasets: ``$MDETR_DATASETS`` (default ``./datasets``), read at call time."""
    return os.path.expanduser(os.environ.get("MDETR_DATASETS", "datasets"))


def _fail(json_file: str, where: str, message: str) -> DatasetFormatError:
    return DatasetFormatError(f"{json_file}: {where}: {message}")


def _read_json(json_file: str, dataset_name: str | None) -> Any:
    """Parse a UTF-8 json file (a leading byte-order mark is allowed, as RFC 8259 permits).

    Raises:
        FileNotFoundError: no such file.
        DatasetFormatError: not UTF-8 or not json; the message gives the byte, or the line and
            column, where parsing failed.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"annotation file of dataset {dataset_name!r} not found: {json_file} "
            f"(datasets root: $MDETR_DATASETS={dataset_root()!r}; see datasets/README.md)"
        )
    try:
        # Explicit encoding: the locale's would misread the file on a non-UTF-8 host.
        with open(json_file, encoding="utf-8-sig") as f:
            return json.load(f)
    except UnicodeDecodeError:
        # Decoding is chunked while reading: decode the whole file again for the byte offset.
        with open(json_file, "rb") as f:
            raw = f.read()
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise _fail(
                json_file, f"byte {e.start}", f"not UTF-8 text ({e.reason}: {raw[e.start:e.end]!r})"
            ) from None
        raise
    except json.JSONDecodeError as e:
        raise _fail(
            json_file, f"line {e.lineno} column {e.colno} (character {e.pos})",
            f"malformed json: {e.msg}",
        ) from None


def _check_spans(spans: Any, caption: str, json_file: str, where: str, field: str) -> list:
    """Validate a list of ``[begin, end)`` character spans into ``caption``; returns it unchanged."""
    if not isinstance(spans, list):
        raise _fail(
            json_file, where, f"field {field!r} must be a list of [begin, end] spans, got {spans!r}"
        )
    n = len(caption)
    for span in spans:
        if (
            not isinstance(span, (list, tuple))
            or len(span) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            raise _fail(
                json_file, where, f"field {field!r}: span {span!r} is not a pair of integers"
            )
        begin, end = span
        if not 0 <= begin <= end <= n:
            raise _fail(
                json_file,
                where,
                f"field {field!r}: span {list(span)} lies outside the caption {caption!r} "
                f"(length {n})",
            )
    return spans


def _covers_text(spans: list, caption: str) -> bool:
    """Whether any ``[begin, end)`` span covers a non-space character of ``caption``."""
    return any(caption[begin:end].strip() for begin, end in spans)


def _check_bbox(bbox: Any, json_file: str, where: str) -> list:
    if (
        not isinstance(bbox, (list, tuple))
        or len(bbox) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        or not all(math.isfinite(v) for v in bbox)
    ):
        raise _fail(
            json_file, where, f"field 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}"
        )
    return bbox


def _image_file(
    entry: Mapping, image_root: str | Mapping[str, str], json_file: str, where: str
) -> str:
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise _fail(json_file, where, "field 'file_name' is missing")
    if isinstance(image_root, Mapping):
        # Mixed pre-training set: the image folder depends on the entry's ``data_source`` (§5.5).
        source = entry.get("data_source")
        if source not in image_root:
            raise _fail(
                json_file,
                where,
                f"field 'data_source' is {source!r}; expected one of {sorted(image_root)}",
            )
        root = image_root[source]
    else:
        root = image_root
    # Interned: the many captions of one image share one path string while records are in memory.
    return sys.intern(os.path.join(root, file_name))


def load_mdetr_json(
    json_file: str, image_root: str | Mapping[str, str], dataset_name: str | None = None
) -> list[dict]:
    """Read an MDETR-format COCO json into Detectron2 dataset dicts (one per image-caption pair).

    Crowd annotations (``iscrowd == 1``) are dropped as the official loader does. Boxes are kept as in
    the file (``XYWH_ABS``); clamping to the image and dropping empty boxes happens in the mapper,
    after the real image size is known, as in the official code (§5.2).

    Each dict holds: ``file_name``, ``height``, ``width``, ``image_id`` (the json entry id = datapoint
    id), ``caption``, ``annotations`` (``bbox``, ``bbox_mode``, ``category_id``, ``tokens_positive`` and,
    when present, ``segmentation``, ``isfinal``), and, when present in the entry, ``dataset_name``,
    ``tokens_positive_eval``, ``original_id``, ``original_img_id``, ``sentence_id``, ``task_id``,
    ``questionId``, ``answer``, ``question_type``. The CLEVR span key ``tokens`` is renamed
    ``tokens_positive``. Unused fields (``area``, ``iscrowd``, ``tokens_negative``, ``coco_url``, ...)
    are not kept, to keep the 1.3M-record pre-training set small.

    Args:
        json_file: path of the annotation file.
        image_root: folder the ``file_name``s are relative to, or a mapping ``data_source -> folder``
            (the mixed pre-training set).
        dataset_name: registered name, only used in messages.

    Raises:
        FileNotFoundError: the annotation file does not exist.
        DatasetFormatError: a record is malformed (the message names the file, the record and the field).
    """
    start = time.perf_counter()
    data = _read_json(json_file, dataset_name)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise _fail(json_file, "top level", "not a COCO-format json (no 'images' list)")

    annotations_by_image: dict[Any, list] = {}
    for ann in data.get("annotations", []):
        annotations_by_image.setdefault(ann.get("image_id"), []).append(ann)

    records = []
    n_crowd = 0
    image_ids: set = set()
    textless: list[str] = []  # annotations / eval phrases whose spans cover no text
    for position, entry in enumerate(data["images"]):
        image_id = entry.get("id")
        where = f"image entry id={image_id!r}"
        if image_id in image_ids:
            # The second caption would silently receive the first one's boxes and spans.
            first = next(i for i, e in enumerate(data["images"]) if e.get("id") == image_id)
            raise _fail(
                json_file,
                f"images[{position}]",
                f"duplicate image id {image_id!r} (also images[{first}]): every image-caption "
                "entry needs its own id",
            )
        image_ids.add(image_id)
        caption = entry.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise _fail(
                json_file,
                where,
                "field 'caption' is missing or empty: every MDETR record needs text",
            )
        try:
            height, width = int(entry["height"]), int(entry["width"])  # strings in the Flickr files
        except (KeyError, TypeError, ValueError):
            raise _fail(
                json_file, where, "fields 'height'/'width' are missing or not integers"
            ) from None
        record = {
            "file_name": _image_file(entry, image_root, json_file, where),
            "height": height,
            "width": width,
            "image_id": image_id,
            "caption": caption,
        }
        # Interned: a few distinct values repeated over millions of records.
        if "dataset_name" in entry:
            record["dataset_name"] = sys.intern(str(entry["dataset_name"]))
        for key in _IMAGE_ID_KEYS + _IMAGE_QA_KEYS:
            if key in entry:
                record[key] = entry[key]
        if "question_type" in record:
            record["question_type"] = sys.intern(str(record["question_type"]))
        if "tokens_positive_eval" in entry:
            phrases = entry["tokens_positive_eval"]
            if not isinstance(phrases, list):
                raise _fail(
                    json_file, where, "field 'tokens_positive_eval' must be a list of span lists"
                )
            for i, spans in enumerate(phrases):
                _check_spans(spans, caption, json_file, where, "tokens_positive_eval")
                if not _covers_text(spans, caption):
                    textless.append(f"{where}, tokens_positive_eval[{i}] = {spans!r}")
            record["tokens_positive_eval"] = phrases

        objs = []
        for ann in annotations_by_image.get(image_id, ()):
            if ann.get("iscrowd", 0) == 1:
                n_crowd += 1
                continue
            ann_where = f"{where}, annotation id={ann.get('id')!r}"
            spans = ann.get("tokens_positive", ann.get("tokens"))  # CLEVR / CLEVR-Ref+ use "tokens"
            if spans is None:
                raise _fail(
                    json_file, ann_where, "field 'tokens_positive' (or CLEVR 'tokens') is missing"
                )
            obj = {
                "bbox": _check_bbox(ann.get("bbox"), json_file, ann_where),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": ann.get("category_id", 1),
                "tokens_positive": _check_spans(
                    spans, caption, json_file, ann_where, "tokens_positive"
                ),
            }
            if not _covers_text(spans, caption):
                textless.append(f"{ann_where}, tokens_positive = {spans!r}")
            if ann.get("segmentation"):
                obj["segmentation"] = ann["segmentation"]
            if "isfinal" in ann:
                obj["isfinal"] = int(ann["isfinal"])
            objs.append(obj)
        record["annotations"] = objs
        records.append(record)
    orphans = sorted(
        (image_id for image_id in annotations_by_image if image_id not in image_ids), key=repr
    )
    if orphans:
        n = sum(len(annotations_by_image[i]) for i in orphans)
        logger.warning(
            "%s: %d annotation(s) refer to %d image id(s) that have no entry in 'images' and are "
            "ignored: image_id %s%s", json_file, n, len(orphans),
            ", ".join(map(repr, orphans[:10])), " ..." if len(orphans) > 10 else "",
        )
    if textless:
        # Kept, as officially: such a box is matched and regressed but gets no text supervision.
        logger.warning(
            "%s: %d box(es)/phrase(s) have spans that cover no text (empty, [b, b] or only "
            "spaces), so an all-zero positive map; the first: %s", json_file, len(textless),
            textless[0],
        )
    del data, annotations_by_image, image_ids
    logger.info(
        "Loaded %d image-caption records of %s from %s in %.1fs (%d crowd annotations dropped)",
        len(records),
        dataset_name or "an MDETR dataset",
        json_file,
        time.perf_counter() - start,
        n_crowd,
    )
    return records


def load_clevr_questions(
    json_file: str, image_root: str, dataset_name: str | None = None
) -> list[dict]:
    """Read an original CLEVR question json (``{"questions": [...]}``) into question-only records.

    Used for CLEVR-Humans and the CLEVR test splits (reference §5.7): no boxes, ``caption`` = the
    question, ``answer`` when the file has it, ``image_id`` = ``question_index`` (else the position).
    """
    data = _read_json(json_file, dataset_name)
    questions = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(questions, list):
        raise _fail(json_file, "top level", "not a CLEVR question file (no 'questions' list)")
    records = []
    for i, q in enumerate(questions):
        where = f"question {i}"
        caption = q.get("question")
        if not isinstance(caption, str) or not caption.strip():
            raise _fail(json_file, where, "field 'question' is missing or empty")
        if not q.get("image_filename"):
            raise _fail(json_file, where, "field 'image_filename' is missing")
        record = {
            "file_name": os.path.join(image_root, q["image_filename"]),
            "height": CLEVR_IMAGE_HW[0],
            "width": CLEVR_IMAGE_HW[1],
            "image_id": q.get("question_index", i),
            "caption": caption,
            "annotations": [],
        }
        if "answer" in q:
            record["answer"] = q["answer"]
        records.append(record)
    logger.info("Loaded %d CLEVR questions of %s from %s", len(records), dataset_name, json_file)
    return records


def load_lvis_v1_json(
    json_file: str, image_root: str, dataset_name: str | None = None
) -> list[dict]:
    """Read an LVIS v1 json (e.g. ``lvis_v1_minival.json``) into plain per-image detection records.

    No caption: LVIS is evaluated by prompting the model with the category names (reference §4.5).
    ``file_name`` is ``<image_root>/<split>/<file>`` taken from ``coco_url`` (LVIS v1 images are the
    COCO 2017 images). Like Detectron2's COCO loader, when the file lists its categories, loading
    sets the dataset's metadata ``thing_classes`` (category names by increasing id: the class
    prompts) and ``thing_dataset_id_to_contiguous_id``, and annotations get the contiguous ids.
    """
    data = _read_json(json_file, dataset_name)
    categories = sorted(data.get("categories", []), key=lambda c: c["id"])
    contiguous = {c["id"]: i for i, c in enumerate(categories)}
    if dataset_name and categories:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[c["name"] for c in categories],
            thing_dataset_id_to_contiguous_id=contiguous,
        )
    by_image: dict[Any, list] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = []
    for img in data.get("images", []):
        where = f"image id={img.get('id')!r}"
        url = img.get("coco_url") or img.get("file_name")
        if not url:
            raise _fail(json_file, where, "field 'coco_url' is missing")
        split_dir, base = url.split("/")[-2:]
        objs = []
        for ann in by_image.get(img["id"], ()):
            ann_where = f"{where}, annotation id={ann.get('id')!r}"
            category = ann.get("category_id")
            if contiguous:
                if category not in contiguous:
                    raise _fail(
                        json_file, ann_where, f"field 'category_id' {category!r} is not a category"
                    )
                category = contiguous[category]
            obj = {
                "bbox": _check_bbox(ann.get("bbox"), json_file, ann_where),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": category,
            }
            if ann.get("segmentation"):
                obj["segmentation"] = ann["segmentation"]
            objs.append(obj)
        records.append(
            {
                "file_name": os.path.join(image_root, split_dir, base),
                "height": int(img["height"]),
                "width": int(img["width"]),
                "image_id": img["id"],
                "annotations": objs,
                "neg_category_ids": img.get("neg_category_ids", []),
                "not_exhaustive_category_ids": img.get("not_exhaustive_category_ids", []),
            }
        )
    return records


def register_mdetr_dataset(
    name: str,
    loader: Callable[[str, Any, str], list[dict]],
    json_file: str,
    image_root: str | Mapping[str, str],
    **metadata: Any,
) -> None:
    """Register ``name`` with a lazy ``loader(json_file, image_root, name)`` and its metadata.

    Nothing is read at registration. Registering a name again with the same files is a no-op
    (Detectron2 v0.6 asserts on duplicates, main skips them), so importing the package twice is
    safe; with other files it is an error (the first registration would silently stay).

    Raises:
        ValueError: ``name`` is already registered with another json file or image root, or by
            something else than this function.
    """
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        registered = (meta.get("json_file"), meta.get("image_root"))
        if registered != (json_file, image_root):
            raise ValueError(
                f"dataset {name!r} is already registered with json_file={registered[0]!r}, "
                f"image_root={registered[1]!r}; cannot register it again with "
                f"json_file={json_file!r}, image_root={image_root!r} (choose another name, or "
                "DatasetCatalog.remove / MetadataCatalog.remove it first)"
            )
        logger.debug("dataset %s already registered with the same files", name)
        return
    # Default-argument capture: each lambda keeps its own paths (not the loop variables).
    DatasetCatalog.register(name, lambda j=json_file, r=image_root, n=name, f=loader: f(j, r, n))
    metadata.setdefault("evaluator_type", "coco_agnostic")
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, **metadata)
    MDETR_DATASET_NAMES.append(name)


def register_mdetr_json(
    name: str, json_file: str, image_root: str | Mapping[str, str], **metadata: Any
) -> None:
    """Register a dataset stored as an MDETR-format json (one call for a custom dataset).

    Args:
        name: the name used in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
        json_file: the MDETR json (see ``datasets/README.md``).
        image_root: folder of the images (``file_name`` is relative to it), or a mapping
            ``data_source -> folder``.
        **metadata: extra metadata, e.g. ``evaluator_type`` (default ``"coco_agnostic"``).
    """
    register_mdetr_dataset(name, load_mdetr_json, json_file, image_root, **metadata)
