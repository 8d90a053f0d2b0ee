"""What every dataset conversion shares: box arithmetic without float noise, json/jsonl files, the
report (counts, warnings about what a format cannot hold) and the validation of the output."""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import tempfile
from typing import Any, Iterable, Mapping

from ..datasets.check import DatasetReport, check_mdetr_json
from ..datasets.mdetr_json import DatasetFormatError

logger = logging.getLogger(__name__)

# Box coordinates are rounded to this many decimals after a subtraction or an addition: enough for
# any pixel coordinate, and it removes the float noise of x2 = x + (x2 - x), so that a conversion
# there and back gives the numbers of the input (any input with at most 10 decimals).
_DECIMALS = 10


def _combine(value: float) -> float:
    return round(value, _DECIMALS)


def add(a: float, b: float) -> float:
    """``a + b``; ints stay ints, floats lose the noise below 1e-10."""
    return a + b if isinstance(a, int) and isinstance(b, int) else _combine(a + b)


def sub(a: float, b: float) -> float:
    """``a - b``; ints stay ints, floats lose the noise below 1e-10."""
    return a - b if isinstance(a, int) and isinstance(b, int) else _combine(a - b)


def xywh_to_xyxy(box: list) -> list:
    x, y, w, h = box
    return [x, y, add(x, w), add(y, h)]


def xyxy_to_xywh(box: list) -> list:
    x1, y1, x2, y2 = box
    return [x1, y1, sub(x2, x1), sub(y2, y1)]


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclasses.dataclass
class ConversionReport:
    """Counts of a conversion, the warnings about what the target format cannot hold, and the
    validation of the written file (the checks of ``datasets/register.py --check``)."""

    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    validation: DatasetReport | None = None
    _dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def dropped(self, what: str, where: str, reason: str, n: int = 1) -> None:
        """Record that field ``what`` of ``where`` (e.g. "image entries") is not written."""
        self._dropped[(what, where, reason)] += n

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning(message)

    def finish(self) -> None:
        """Turn the recorded drops into one warning per field (call once, after converting)."""
        for (what, where, reason), n in sorted(self._dropped.items()):
            self.warn(f"{what} ({where}): {reason}; not written for {n} item(s)")
        self._dropped.clear()

    @property
    def ok(self) -> bool:
        return self.validation is None or self.validation.ok


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(f"{path}: not valid json: {e}") from None


def write_json(path: str, data: Any) -> None:
    """Write ``data`` atomically (a killed conversion never leaves a half-written file)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    """One json object per line (blank lines skipped); errors name the file and the line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetFormatError(f"{path}: line {number}: not valid json: {e}") from None
            if not isinstance(record, dict):
                raise DatasetFormatError(f"{path}: line {number}: expected a json object")
            records.append(record)
    return records


def write_jsonl(path: str, records: Iterable[Mapping]) -> None:
    """One json object per line, written as MMDetection's converters write (``jsonlines``
    defaults: non-ASCII kept, default separators)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def validate_mdetr(
    data: Mapping | str,
    image_root: str | None,
    *,
    samples: int = 20,
    tokenizer: Any = None,
) -> DatasetReport:
    """The checks of ``datasets/register.py --check`` on an MDETR json (a path or a dict).

    Images are checked only when ``image_root`` is given.
    """
    if isinstance(data, str):
        return check_mdetr_json(data, image_root or "", samples, tokenizer, image_root is not None)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "converted.json")
        write_json(path, data)
        return check_mdetr_json(path, image_root or "", samples, tokenizer, image_root is not None)
