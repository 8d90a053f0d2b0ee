"""LVIS "fixed AP" (Dave et al.): per category the top 10,000 detections over the whole dataset, no
per-image cap, scored with the LVIS API (reference §4.5, §7.7); and Detectron2's standard LVIS
evaluator, made to run on current NumPy."""
import contextlib
import io
import logging
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, LVISEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from .common import log_table, to_numpy

logger = logging.getLogger(__name__)

__all__ = ["PerCategoryTopK", "LVISFixedAPEvaluator", "NumpyCompatLVISEvaluator"]


@contextlib.contextmanager
def _numpy_float_alias():
    """lvis 0.5.3 (the last release) still calls ``np.float``, removed in NumPy 1.24: provide the alias only
    while the LVIS API runs."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float


class PerCategoryTopK:
    """Keeps, per category, only the ``k`` best-scored detections seen so far (bounded memory).

    Detections are rows ``(image_id, score, x, y, w, h)`` in float64 arrays. A category's buffer is cut back
    to ``k`` whenever it reaches ``2k`` rows, so memory stays O(k) per category.
    """

    def __init__(self, k: int = 10000):
        self.k = int(k)
        self._chunks: Dict[int, List[np.ndarray]] = {}
        self._sizes: Dict[int, int] = {}

    def add(self, category_ids, rows: np.ndarray) -> None:
        category_ids = np.asarray(category_ids).reshape(-1)
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        # One sort, then one slice per category (an image brings every category's detections).
        order = np.argsort(category_ids, kind="stable")
        cats, starts = np.unique(category_ids[order], return_index=True)
        for cat, sel in zip(cats.tolist(), np.split(rows[order], starts[1:])):
            self._chunks.setdefault(cat, []).append(sel)
            self._sizes[cat] = self._sizes.get(cat, 0) + len(sel)
            if self._sizes[cat] >= 2 * self.k:
                self._trim(cat)

    def _trim(self, cat: int) -> None:
        rows = np.concatenate(self._chunks[cat], axis=0)
        order = np.argsort(-rows[:, 1], kind="stable")[: self.k]
        self._chunks[cat] = [rows[order]]
        self._sizes[cat] = len(order)

    def merge(self, other: "PerCategoryTopK") -> None:
        for cat, chunks in other._chunks.items():
            for c in chunks:
                self.add(np.full(len(c), cat), c)

    def result(self, dedupe: bool = False) -> Dict[int, np.ndarray]:
        """Per category, its best ``k`` rows sorted by decreasing score (``dedupe``: identical rows, e.g. an
        image repeated by sampler padding on two ranks, are kept once)."""
        out = {}
        for cat in sorted(self._chunks):
            rows = np.concatenate(self._chunks[cat], axis=0)
            if dedupe and len(rows):
                rows = np.unique(rows, axis=0)
            order = np.argsort(-rows[:, 1], kind="stable")[: self.k]
            out[cat] = rows[order]
        return out


class LVISFixedAPEvaluator(DatasetEvaluator):
    """LVIS fixed AP (AP, AP50, AP75, APs/m/l, APr/c/f) as fractions, ``{"lvis_fixed_ap": {...}}``.

    Expected outputs: every detection of the image, uncapped: ``all_instances`` when the output has
    it (class-prompt detection), else ``instances``, with ``pred_classes`` (contiguous Detectron2
    ids), ``scores`` and ``pred_boxes`` (xyxy, original pixels). Contiguous ids map to LVIS category
    ids through the dataset's metadata ``thing_dataset_id_to_contiguous_id``, else by rank of the
    ground truth's category ids (id order, as Detectron2's LVIS metadata). The LVIS image id is
    ``original_id`` when the input has one, else ``image_id``.

    Ground truth: an LVIS-format json (metadata ``lvis_json``, e.g. ``lvis_v1_minival.json``).
    """

    def __init__(self, dataset_name: str, lvis_json: Optional[str] = None, *, topk: int = 10000):
        from lvis import LVIS  # optional: only the LVIS evaluation needs it (not in requirements)

        meta = MetadataCatalog.get(dataset_name)
        if lvis_json is None:
            lvis_json = getattr(meta, "lvis_json", None) or getattr(meta, "json_file", None)
        self._dataset_name = dataset_name
        with contextlib.redirect_stdout(io.StringIO()):
            self._lvis = LVIS(str(lvis_json))
        self._meta = meta
        # Read on first use: loading the dataset is what sets the metadata.
        self._category_ids: Optional[np.ndarray] = None
        self._topk = topk
        self._buffer = PerCategoryTopK(topk)
        self._seen: set = set()

    def reset(self):
        self._buffer = PerCategoryTopK(self._topk)
        self._seen = set()

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            img_id = inp.get("original_id", inp["image_id"])
            img_id = int(img_id)
            if img_id not in self._lvis.imgs:
                raise KeyError(f"{self._dataset_name}: image {img_id} is not in the LVIS ground truth")
            if img_id in self._seen:
                continue  # repeated datapoint (sampler padding)
            self._seen.add(img_id)
            inst = out.get("all_instances", out["instances"])
            if len(inst) == 0:
                continue
            boxes = BoxMode.convert(to_numpy(inst.pred_boxes, np.float64).reshape(-1, 4),
                                    BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
            scores = to_numpy(inst.scores, np.float64).reshape(-1, 1)
            rows = np.concatenate([np.full((len(boxes), 1), img_id, np.float64), scores, boxes], axis=1)
            self._buffer.add(self._lvis_category_ids(to_numpy(inst.pred_classes, np.int64)), rows)

    def _lvis_category_ids(self, classes: np.ndarray) -> np.ndarray:
        """LVIS category ids of contiguous class ids."""
        if self._category_ids is None:
            mapping = self._meta.get("thing_dataset_id_to_contiguous_id")
            if mapping:
                ids = np.zeros(len(mapping), np.int64)
                for dataset_id, contiguous in mapping.items():
                    ids[contiguous] = dataset_id
            else:
                ids = np.asarray(sorted(self._lvis.get_cat_ids()), np.int64)
            self._category_ids = ids
        if len(classes) and not 0 <= classes.min() <= classes.max() < len(self._category_ids):
            raise ValueError(f"{self._dataset_name}: pred_classes must be contiguous ids in [0, "
                             f"{len(self._category_ids)}), got {classes.min()}..{classes.max()}")
        return self._category_ids[classes]

    def evaluate(self):
        comm.synchronize()
        parts = comm.gather((self._buffer, self._seen), dst=0)
        if not comm.is_main_process():
            return {}
        merged = PerCategoryTopK(self._topk)
        seen: set = set()
        for buf, s in parts:
            merged.merge(buf)
            seen |= s
        return self.compute(merged, seen)

    def compute(self, buffer: PerCategoryTopK, seen: set):
        from lvis import LVISEval, LVISResults  # optional, as in __init__

        missing = [i for i in self._lvis.get_img_ids() if i not in seen]
        if missing:
            raise RuntimeError(
                f"{self._dataset_name}: no prediction for {len(missing)} LVIS image(s), e.g. {missing[:10]}"
            )
        dets = []
        for cat, rows in buffer.result(dedupe=True).items():
            for r in rows.tolist():
                dets.append({"image_id": int(r[0]), "category_id": cat, "score": r[1], "bbox": r[2:6]})
        if not dets:
            logger.warning("%s: no detections", self._dataset_name)
            return OrderedDict(lvis_fixed_ap={})
        with contextlib.redirect_stdout(io.StringIO()), _numpy_float_alias():
            res = LVISResults(self._lvis, dets, max_dets=-1)
            ev = LVISEval(self._lvis, res, iou_type="bbox")
            ev.params.max_dets = -1  # no per-image cap (it only names the AR keys: "AR@-1")
            ev.run()
        results = OrderedDict((k, float(v)) for k, v in ev.get_results().items())
        log_table(f"{self._dataset_name}: LVIS fixed AP (top {self._topk} per category)", results)
        return OrderedDict(lvis_fixed_ap=results)


class NumpyCompatLVISEvaluator(LVISEvaluator):
    """Detectron2's ``LVISEvaluator`` (standard LVIS AP: at most 300 detections per image,
    percentages), unchanged but for the ``np.float`` alias the LVIS API needs on NumPy >= 1.24."""

    def evaluate(self):
        with _numpy_float_alias():
            return super().evaluate()
