"""Class-agnostic COCO box / mask AP over the datapoints of an MDETR json (reference §7.1)."""
import contextlib
import io
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .common import gather_dicts_to_main, log_table, to_numpy

logger = logging.getLogger(__name__)

__all__ = ["ClassAgnosticCOCOEvaluator", "class_agnostic_coco_eval"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def class_agnostic_coco_eval(coco_gt: COCO, detections: List[Dict], img_ids: Sequence[int], iou_type: str):
    """Run pycocotools with ``useCats = 0`` (every box matches every GT box regardless of category).

    Returns the 12 standard stats as fractions (``STAT_NAMES`` order) or None when there is nothing to evaluate.
    """
    if not detections:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.useCats = 0
        ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(x) for x in ev.stats]


class ClassAgnosticCOCOEvaluator(DatasetEvaluator):
    """COCO AP with categories ignored, all Q boxes of every datapoint as detections (label-free), as the
    official ``CocoEvaluator(useCats=False)``. Results ``{"bbox": {AP, AP50, ...}}`` and, with masks,
    ``{"segm": {...}}``, as fractions in [0, 1] like the official logs (``AP50`` is the pre-training "AP").

    Ground truth: the MDETR json (``MetadataCatalog.get(name).json_file``), one image entry per datapoint.
    Inputs read: ``image_id``. Outputs read: ``instances.pred_boxes``, ``instances.scores``, optional
    ``instances.pred_masks`` (original size).
    """

    def __init__(self, dataset_name: str, json_file: Optional[str] = None, *, use_masks: bool = False):
        if json_file is None:
            json_file = MetadataCatalog.get(dataset_name).json_file
        self._dataset_name = dataset_name
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco = COCO(str(json_file))
        if 0 in self._coco.anns:
            logger.warning(
                "%s: %s has an annotation with id 0, which pycocotools never matches (it counts as "
                "missed, as in the official evaluation); number annotations from 1",
                dataset_name, json_file,
            )
        self._use_masks = use_masks
        # With useCats = 0 pycocotools still only collects detections whose category is one of the GT
        # categories, so every detection carries the first GT category id (the official label 1 is one).
        # (A json without "categories", e.g. a CLEVR question file, has no boxes to score either.)
        cat_ids = sorted(self._coco.getCatIds()) if "categories" in self._coco.dataset else []
        self._det_category = cat_ids[0] if cat_ids else 1
        self._preds: Dict[int, List[Dict]] = {}  # datapoint id -> its COCO-format detections

    @property
    def has_annotations(self) -> bool:
        """Whether the json has any box (test-like splits such as GQA testdev have none)."""
        return len(self._coco.anns) > 0

    def reset(self):
        self._preds = {}

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            img_id = inp["image_id"]
            if img_id not in self._coco.imgs:
                raise KeyError(f"{self._dataset_name}: datapoint {img_id} is not in the ground-truth json")
            inst = out["instances"].to("cpu")
            # Label-free: every detection gets the one category (see __init__).
            detections = Instances(inst.image_size, pred_boxes=inst.pred_boxes, scores=inst.scores,
                                   pred_classes=torch.full((len(inst),), self._det_category))
            if self._use_masks and inst.has("pred_masks"):
                # As a numpy array: instances_to_coco_json encodes each mask with np.array.
                masks = to_numpy(inst.pred_masks, bool)
                detections.pred_masks = masks[:, 0] if masks.ndim == 4 else masks
            self._preds[img_id] = instances_to_coco_json(detections, img_id)

    def evaluate(self):
        preds = gather_dicts_to_main(self._preds)
        if preds is None:
            return {}
        return self.compute(preds)

    def compute(self, preds: Dict[int, List[Dict]]):
        missing = [i for i in self._coco.getImgIds() if i not in preds]
        if missing:
            raise RuntimeError(
                f"{self._dataset_name}: no prediction for {len(missing)} datapoint(s), e.g. image_id {missing[:10]}"
            )
        results = OrderedDict()
        detections = [d for p in preds.values() for d in p]
        with_masks = any("segmentation" in d for d in detections)
        for iou_type in ["bbox"] + (["segm"] if with_masks else []):
            # Mask AP without the boxes: pycocotools would take a detection's area from its box
            # (as Detectron2's COCOEvaluator, and the official evaluator which writes no box).
            key = "segmentation" if iou_type == "bbox" else "bbox"
            dets = [{k: v for k, v in d.items() if k != key} for d in detections]
            stats = class_agnostic_coco_eval(self._coco, dets, list(preds.keys()), iou_type)
            if stats is None:
                logger.warning("%s: no detections, %s AP not computed", self._dataset_name, iou_type)
                continue
            res = OrderedDict(zip(STAT_NAMES, stats))
            log_table(f"{self._dataset_name}: class-agnostic {iou_type} AP", res)
            results[iou_type] = res
        return results
