"""Referring-expression precision@k (RefCOCO/+/g) and its CLEVR-Ref+ variant (reference §7.2, §7.3)."""
import contextlib
import copy
import io
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from pycocotools.coco import COCO
from torchvision.ops import box_iou, generalized_box_iou

from .common import first_hit_rank, gather_dicts_to_main, log_grid, recall_at, to_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "RefExpEvaluator",
    "ClevrRefEvaluator",
    "rank_refexp_boxes",
    "refexp_first_hits",
    "refexp_ground_truth",
]


def refexp_ground_truth(json_file: str) -> Dict[int, Dict[str, Any]]:
    """The ground truth of an MDETR json as ``{datapoint id: {"image": entry, "annotations": [...]}}``,
    read with pycocotools' ``COCO`` as the official evaluators do (crowd boxes kept: its
    ``getAnnIds(imgIds=...)`` does not filter them).

    Raises:
        ValueError: an annotation refers to an image the file does not have.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(str(json_file))
    unknown = sorted(set(coco.imgToAnns) - set(coco.imgs))
    if unknown:
        ann = coco.imgToAnns[unknown[0]][0]
        raise ValueError(f"{json_file}: annotation {ann.get('id')} refers to unknown image {unknown[0]}")
    return OrderedDict((img_id, {"image": image, "annotations": coco.imgToAnns[img_id]})
                       for img_id, image in coco.imgs.items())


def rank_refexp_boxes(scores, boxes) -> torch.Tensor:
    """Sort the predicted boxes by score, best first, exactly as the official evaluators do.

    The official code sorts ``(score, [x1, y1, x2, y2])`` tuples with ``reverse=True``; on equal scores the
    tuple comparison falls through to the box coordinates, so the box with the larger x1 (then y1, ...) comes
    first. We sort the same tuples so that ties resolve identically (reference §4.1, fixture tie scenarios).

    Returns:
        ``(Q, 4)`` float32 tensor of xyxy boxes in rank order.
    """
    scores_list = torch.as_tensor(scores).float().flatten().tolist()
    boxes_list = torch.as_tensor(boxes).float().reshape(-1, 4).tolist()
    if len(scores_list) != len(boxes_list):
        raise ValueError(f"{len(scores_list)} scores for {len(boxes_list)} boxes")
    if not boxes_list:
        return torch.zeros((0, 4), dtype=torch.float32)
    ranked = sorted(zip(scores_list, boxes_list), reverse=True)
    return torch.tensor([b for _, b in ranked], dtype=torch.float32)


def refexp_first_hits(scores, boxes, gt_box_xywh: Sequence[float], thresh: float = 0.5) -> Tuple[int, int]:
    """Rank of the first correct box under GIoU ≥ thresh (official) and under IoU ≥ thresh.

    Args:
        scores: ``(Q,)`` ranking scores.
        boxes: ``(Q, 4)`` xyxy boxes in original-image pixels.
        gt_box_xywh: the single ground-truth box, COCO ``[x, y, w, h]``.

    Returns:
        ``(giou_rank, iou_rank)``, each -1 when no box qualifies; P@k counts ``0 <= rank < k``.
    """
    ranked = rank_refexp_boxes(scores, boxes)
    if len(ranked) == 0:
        return -1, -1
    x, y, w, h = [float(v) for v in gt_box_xywh]
    gt = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
    giou = generalized_box_iou(ranked, gt)[:, 0]
    iou = box_iou(ranked, gt)[:, 0]
    return first_hit_rank((giou >= thresh).tolist()), first_hit_rank((iou >= thresh).tolist())


class RefExpEvaluator(DatasetEvaluator):
    """Precision@k of referring-expression grounding, per ``dataset_name`` (refcoco, refcoco+, refcocog).

    A datapoint is correct at k when one of its k best-scored boxes has GIoU ≥ 0.5 with the single
    ground-truth box (official protocol, keys ``<dataset>/P@k``). The usual IoU ≥ 0.5 criterion is reported
    beside it as ``<dataset>/P@k_IoU`` (not an official MDETR number).

    Ground truth comes from the MDETR json (``MetadataCatalog.get(name).json_file``): one image entry per
    expression, with ``dataset_name``. Each datapoint is scored in :meth:`process` (only first-hit ranks
    are kept), so memory and the final gather stay small.

    With ``breakdown_field``, the datapoints of each dataset are also split by the value of that field
    of their json image entry (e.g. the synthetic world's ``expression_type``: color, shape, relation,
    ...), with keys ``<dataset>/<value>/P@k``; entries without the field count in the overall rows only.

    Inputs read: ``image_id``. Outputs read: ``instances.pred_boxes`` and ``instances.scores`` (or
    ``instances.scores_refexp`` when ``score_field="scores_refexp"``).
    """

    task_name = "refexp"

    def __init__(
        self,
        dataset_name: str,
        json_file: Optional[str] = None,
        *,
        ground_truth: Optional[Dict] = None,
        topk: Sequence[int] = (1, 5, 10),
        iou_thresh: float = 0.5,
        score_field: str = "scores",
        single_gt_only: bool = False,
        breakdown_field: Optional[str] = None,
    ):
        """
        Args:
            dataset_name: registered dataset name (for messages and the default json).
            json_file: MDETR json with the ground truth; default ``MetadataCatalog.get(dataset_name).json_file``.
            ground_truth: already loaded :func:`refexp_ground_truth` (tests); overrides ``json_file``.
            topk: the k of P@k.
            iou_thresh: threshold for both GIoU and IoU.
            score_field: ``Instances`` field ranking the boxes.
            single_gt_only: skip datapoints without exactly one GT box (CLEVR-Ref+) instead of raising.
            breakdown_field: image-entry field whose values split the metrics into extra rows.
        """
        self._dataset_name = dataset_name
        if ground_truth is None:
            if json_file is None:
                json_file = MetadataCatalog.get(dataset_name).json_file
            ground_truth = refexp_ground_truth(json_file)
        self._gt = ground_truth
        self._topk = tuple(topk)
        self._thresh = iou_thresh
        self._score_field = score_field
        self._single_gt_only = single_gt_only
        self._breakdown_field = breakdown_field
        # datapoint id -> (dataset_name, giou first-hit rank, iou first-hit rank)
        self._ranks: Dict[int, Tuple[str, int, int]] = {}

    def reset(self):
        self._ranks = {}

    def _evaluated_ids(self) -> List[int]:
        ids = []
        for img_id, entry in self._gt.items():
            n = len(entry["annotations"])
            if n == 1:
                ids.append(img_id)
            elif not self._single_gt_only:
                raise ValueError(
                    f"{self._dataset_name}: datapoint {img_id} has {n} ground-truth boxes; referring-expression "
                    "evaluation needs exactly one"
                )
        return ids

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            img_id = inp["image_id"]
            if img_id not in self._gt:
                raise KeyError(
                    f"{self._dataset_name}: datapoint {img_id} is not in the ground-truth json (wrong json_file?)"
                )
            entry = self._gt[img_id]
            if len(entry["annotations"]) != 1:
                if self._single_gt_only:
                    continue
                raise ValueError(
                    f"{self._dataset_name}: datapoint {img_id} has {len(entry['annotations'])} ground-truth boxes"
                )
            inst = out["instances"]
            if not inst.has(self._score_field):
                raise KeyError(f"{self._dataset_name}: outputs of datapoint {img_id} lack '{self._score_field}'")
            g, i = refexp_first_hits(
                inst.get(self._score_field).detach().cpu(),
                to_numpy(inst.pred_boxes, np.float32),
                entry["annotations"][0]["bbox"],
                self._thresh,
            )
            name = entry["image"].get("dataset_name", self.task_name)
            self._ranks[img_id] = (name, g, i)

    def evaluate(self):
        ranks = gather_dicts_to_main(self._ranks)
        if ranks is None:
            return {}
        return self.compute(ranks)

    def compute(self, ranks: Dict[int, Tuple[str, int, int]]) -> "OrderedDict[str, Dict[str, float]]":
        """Metrics from gathered first-hit ranks; raises when a datapoint has no prediction."""
        expected = self._evaluated_ids()
        missing = [i for i in expected if i not in ranks]
        if missing:
            raise RuntimeError(
                f"{self._dataset_name}: no prediction for {len(missing)} datapoint(s), e.g. image_id "
                f"{missing[:10]}"
            )
        per_ds: Dict[str, List[Tuple[int, int]]] = OrderedDict()
        per_value: Dict[str, List[Tuple[int, int]]] = {}
        for img_id in expected:
            name, g, i = ranks[img_id]
            per_ds.setdefault(name, []).append((g, i))
            value = self._gt[img_id]["image"].get(self._breakdown_field) if self._breakdown_field else None
            if value is not None:
                per_value.setdefault(f"{name}/{value}", []).append((g, i))
        per_ds.update(sorted(per_value.items()))
        results: Dict[str, float] = OrderedDict()
        table: Dict[str, Dict[str, float]] = OrderedDict()
        for name, rows in per_ds.items():
            row = OrderedDict()
            for k in self._topk:
                row[f"P@{k}"] = recall_at([g for g, _ in rows], k)
            for k in self._topk:
                row[f"P@{k}_IoU"] = recall_at([i for _, i in rows], k)
            row["count"] = float(len(rows))
            table[name] = row
            for key, v in row.items():
                if key != "count":
                    results[f"{name}/{key}"] = v
        log_grid(
            f"{self._dataset_name}: precision@k (GIoU>={self._thresh}: official; *_IoU: IoU>={self._thresh})",
            table,
            "dataset",
        )
        return OrderedDict([(self.task_name, results)])


class ClevrRefEvaluator(RefExpEvaluator):
    """CLEVR-Ref+ precision@k: like :class:`RefExpEvaluator` but ranking by ``scores_refexp``
    (objectness × σ(is-final)) and evaluating only the datapoints with exactly one GT box (reference §7.3).
    Keys ``clevrref/P@k`` (and ``clevrref/P@k_IoU``)."""

    task_name = "clevrref"

    def __init__(self, dataset_name: str, json_file: Optional[str] = None, **kwargs):
        kwargs.setdefault("score_field", "scores_refexp")
        kwargs.setdefault("single_gt_only", True)
        super().__init__(dataset_name, json_file, **kwargs)
        # All CLEVR-Ref+ datapoints are reported under one name, as the official evaluator does.
        self._gt = copy.copy(self._gt)
        for img_id, entry in list(self._gt.items()):
            image = dict(entry["image"], dataset_name="clevrref")
            self._gt[img_id] = {"image": image, "annotations": entry["annotations"]}
