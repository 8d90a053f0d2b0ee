"""Checks of an MDETR dataset and explanations of what is wrong, in the user's terms.

``datasets/register.py --check`` and the dataset converters (``mdetr_d2.data.converters``) run the
same checks: the loader's format checks (:func:`load_mdetr_json` raises :class:`DatasetFormatError`
naming the file, the record and the field), then on a sample of records that the image file exists
and, with a tokenizer, that every box's spans reach at least one token. Each problem is explained:
which record, which field, what was expected and an example of a right value.
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
from typing import Any, Mapping, Sequence

from ...structures.positive_map import create_positive_map_from_caption
from ...structures.tokenizer import encode_caption
from ..dataset_mapper import describe_record
from .mdetr_json import DatasetFormatError, load_mdetr_json

__all__ = ["DatasetReport", "check_mdetr_json", "check_records", "explain_error"]

# What each MDETR-json field must hold, with a right value (datasets/README.md, "Your own dataset").
FIELD_HELP: dict[str, tuple[str, str]] = {
    "top level": (
        "a COCO-format json object with an 'images' list (one entry per image-caption pair), an "
        "'annotations' list (one per box) and 'categories'",
        '{"images": [...], "annotations": [...], "categories": [{"id": 1, "name": "object"}]}',
    ),
    "caption": (
        "a non-empty string in every image entry: the text given to the model",
        '"caption": "the cat on the left"',
    ),
    "height": ("the image height and width in pixels, as integers", '"height": 480, "width": 640'),
    "width": ("the image height and width in pixels, as integers", '"height": 480, "width": 640'),
    "file_name": (
        "the image path, relative to the image root the dataset is registered with",
        '"file_name": "0001.jpg"',
    ),
    "data_source": (
        "with an image root per source (the pre-training mix), the key of the image folder",
        '"data_source": "coco"',
    ),
    "tokens_positive": (
        "in every annotation, a list of [begin, end) character spans of the record's caption: the "
        "words that name this box",
        '"tokens_positive": [[0, 7]]   (the words "the cat" of "the cat on the left")',
    ),
    "tokens_positive_eval": (
        "optional, in the image entry: the phrases to rank at evaluation, one list of "
        "[begin, end) spans per phrase",
        '"tokens_positive_eval": [[[0, 7]], [[11, 19]]]',
    ),
    "bbox": (
        "in every annotation, the box as 4 finite numbers [x, y, width, height] in pixels",
        '"bbox": [20, 50, 200, 180]',
    ),
    "image": (
        "the image file at <image root>/<file_name> (the image root given at registration, "
        "$MDETR_DATASETS for the built-in datasets)",
        '"file_name": "0001.jpg" with the file at my_data/images/0001.jpg',
    ),
    "encoding": (
        "a caption the text encoder can take: at most as many tokens as its positions (512 for "
        "roberta-base) and valid Unicode text (no lone surrogate such as \\ud800); training skips "
        "such a record, evaluation stops on it",
        '"caption": "the cat on the left" (split a very long text over several records)',
    ),
    "token": (
        "spans that cover words of the caption within its first 255 tokens (a span of spaces only, "
        "or past the text the model can read, gives a box nothing to be tied to)",
        '"tokens_positive": [[0, 7]] for "the cat", not [[3, 4]] (the space)',
    ),
}

# `field 'x'` / `fields 'height'/'width'` in the loader's messages, `top level` as their location.
_FIELD_PATTERN = re.compile(r"fields? '(\w+)'")


def _field_of(message: str) -> str | None:
    match = _FIELD_PATTERN.search(message)
    if match:
        return match.group(1)
    return "top level" if "top level" in message else None


def _explain(message: str, field: str | None) -> str:
    if field not in FIELD_HELP:
        return message
    expected, example = FIELD_HELP[field]
    return f"{message}\n    expected: {expected}\n    example:  {example}"


def explain_error(error: BaseException) -> str:
    """The error's message followed by what the field should hold and a right value.

    Works for :class:`DatasetFormatError` (whose message names the file, the record and the field)
    and for the ``FileNotFoundError`` of a missing annotation file; other errors are returned as
    their message.
    """
    message = str(error)
    if isinstance(error, DatasetFormatError):
        return _explain(message, _field_of(message))
    return message


@dataclasses.dataclass
class DatasetReport:
    """Result of checking one dataset: counts and the explained problems (empty when valid)."""

    records: int = 0
    boxes: int = 0
    records_without_boxes: int = 0
    sampled: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"{self.records} records, {self.boxes} boxes, {self.records_without_boxes} records "
            f"without boxes; {self.sampled} sampled records checked"
        )


def check_records(
    records: Sequence[Mapping[str, Any]],
    samples: int = 20,
    tokenizer: Any = None,
    check_images: bool = True,
    seed: int = 0,
    max_caption_tokens: int | None = None,
) -> DatasetReport:
    """Check loaded records: counts, sampled image files and (with a tokenizer) every caption's
    encoding and the sampled records' positive maps.

    Args:
        records: Detectron2 dicts from :func:`load_mdetr_json` (or any registered MDETR dataset).
        samples: records checked at random (all when ``samples >= len(records)``).
        tokenizer: a fast tokenizer (:func:`mdetr_d2.structures.build_tokenizer`) to check
            that every caption can be encoded (each record that cannot is named) and that every
            sampled box's spans reach a token; None skips these checks.
        check_images: check that the sampled records' image files exist.
        seed: seed of the sample.
        max_caption_tokens: the text encoder's limit
            (:func:`mdetr_d2.structures.max_caption_tokens`); longer captions are problems. None:
            no length check.
    """
    report = DatasetReport(records=len(records))
    report.boxes = sum(len(r.get("annotations", ())) for r in records)
    report.records_without_boxes = sum(1 for r in records if not r.get("annotations"))
    if not records:
        report.problems.append(_explain("no records", "top level"))
        return report
    chosen = random.Random(seed).sample(list(records), min(samples, len(records)))
    report.sampled = len(chosen)
    for r in chosen:
        where = f"record image_id={r.get('image_id')!r}"
        if check_images and not os.path.isfile(r["file_name"]):
            report.problems.append(_explain(f"{where}: missing image {r['file_name']}", "image"))
    if tokenizer is not None:
        unencodable = set()
        for r in records:  # every record: training would skip it, evaluation would stop on it
            if "caption" not in r:
                continue
            try:
                encode_caption(tokenizer, r["caption"], max_caption_tokens)
            except ValueError as e:
                unencodable.add(id(r))
                report.problems.append(_explain(f"{describe_record(r)}: caption: {e}", "encoding"))
        for r in chosen:
            if "caption" not in r or not r.get("annotations") or id(r) in unencodable:
                continue
            spans = [a.get("tokens_positive", []) for a in r["annotations"]]
            positive_map = create_positive_map_from_caption(tokenizer, r["caption"], spans)
            empty = [i for i, n in enumerate(positive_map.sum(1).tolist()) if n == 0]
            if empty:
                boxes = ", ".join(
                    f"{r['annotations'][i]['tokens_positive']}" for i in empty[:3]
                )
                report.problems.append(_explain(
                    f"record image_id={r.get('image_id')!r}, caption {r['caption']!r}: "
                    f"{len(empty)} box(es) tied to no token (tokens_positive {boxes})",
                    "token",
                ))
    return report


def check_mdetr_json(
    json_file: str,
    image_root: str | Mapping[str, str],
    samples: int = 20,
    tokenizer: Any = None,
    check_images: bool = True,
) -> DatasetReport:
    """Load an MDETR json with :func:`load_mdetr_json` and :func:`check_records` it.

    A malformed file gives a report with the explained loader error instead of raising.
    """
    try:
        records = load_mdetr_json(json_file, image_root)
    except (DatasetFormatError, FileNotFoundError) as e:
        return DatasetReport(problems=[explain_error(e)])
    return check_records(records, samples, tokenizer, check_images)
