"""PhraseCut referring segmentation: mean/cumulative IoU and precision@θ for masks and boxes (reference §4.4,
§7.5), overall and per PhraseCut analysis subset.

Ground truth is read from the original PhraseCut annotation folder: ``image_data_split.json``,
``refer_<split>.json`` and ``name_att_rel_count.json``.
"""
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm
from PIL import Image, ImageDraw

from .common import log_grid, to_numpy
from .phrasecut_vocab import ATTRIBUTE_FAMILIES, COCO_NAMES, STUFF_NAMES, SUBSET_NAMES

logger = logging.getLogger(__name__)

__all__ = [
    "PhraseCutGroundTruth",
    "PhraseCutEvaluator",
    "phrasecut_prediction",
    "phrasecut_task_stats",
    "phrasecut_metrics",
    "polygons_to_mask",
    "boxes_xywh_to_mask",
]

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def polygons_to_mask(polygons: Sequence, width: int, height: int) -> np.ndarray:
    """Rasterize polygons (lists of ``[x, y]``) into one ``(height, width)`` bool mask.

    Matches the PhraseCut tools: vertices truncated to int, PIL polygon drawn with outline and fill,
    polygons with fewer than 2 vertices skipped, union of all polygons.
    """
    mask = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        if len(poly) < 2:
            continue
        img = Image.new("L", (width, height), 0)
        ImageDraw.Draw(img).polygon([(int(x), int(y)) for x, y in poly], outline=1, fill=1)
        mask |= np.asarray(img) > 0
    return mask


def boxes_xywh_to_mask(boxes: Sequence, width: int, height: int) -> np.ndarray:
    """Rasterize ``[x, y, w, h]`` boxes the way the PhraseCut box IoU does.

    The box becomes inclusive corners ``(x, y, x + w - 1, y + h - 1)`` which are then used as *exclusive*
    slice ends after int truncation, so a box covers ``int(x+w-1) - int(x)`` columns. Negative coordinates
    behave like numpy negative indices. Kept on purpose: it defines the official box IoU numbers.
    """
    mask = np.zeros((height, width), dtype=bool)
    for b in boxes:
        x1, y1, w, h = b
        x2, y2 = x1 + w - 1, y1 + h - 1
        mask[int(y1) : int(y2), int(x1) : int(x2)] = True
    return mask


def _box_iou_phrasecut(pred_boxes: Sequence, gt_boxes: Sequence) -> float:
    all_boxes = list(pred_boxes) + list(gt_boxes)
    xyxy = np.asarray(all_boxes, dtype=np.float64).reshape(-1, 4)
    # The canvas spans [0, max corner]: width = int(max(x + w - 1) + 1).
    width = int(np.max(xyxy[:, 0] + xyxy[:, 2] - 1) + 1)
    height = int(np.max(xyxy[:, 1] + xyxy[:, 3] - 1) + 1)
    m1 = boxes_xywh_to_mask(pred_boxes, width, height)
    m2 = boxes_xywh_to_mask(gt_boxes, width, height)
    inter = int(np.logical_and(m1, m2).sum())
    union = int(np.logical_or(m1, m2).sum())
    return 0.0 if inter == 0 else inter / union


def phrasecut_task_stats(
    gt_task: Mapping, pred_boxes_xywh: Sequence, pred_mask: Optional[np.ndarray]
) -> Tuple[float, float, float, float]:
    """Per-task ``(box IoU, mask IoU, mask intersection, mask union)``; the mask terms are 0 without a mask.

    Args:
        gt_task: a ``refer_<split>.json`` task (``instance_boxes``, ``Polygons``).
        pred_boxes_xywh: kept predicted boxes ``[x, y, w, h]``.
        pred_mask: ``(H, W)`` bool union mask at the original image size, or None.
    """
    iou_box = _box_iou_phrasecut(pred_boxes_xywh, gt_task["instance_boxes"])
    iou_mask = inter = union = 0.0
    if pred_mask is not None:
        pred_mask = np.asarray(pred_mask, dtype=bool)
        h, w = pred_mask.shape
        gt_mask = polygons_to_mask([p for inst in gt_task["Polygons"] for p in inst], w, h)
        inter = float(np.logical_and(gt_mask, pred_mask).sum())
        union = float(np.logical_or(gt_mask, pred_mask).sum())
        iou_mask = 0.0 if inter == 0 else inter / union
    return float(iou_box), float(iou_mask), inter, union


def phrasecut_prediction(instances, score_thresh: float = 0.7) -> Tuple[List[List[float]], Optional[np.ndarray]]:
    """PhraseCut post-processing (reference §4.4): keep queries with score > thresh; boxes as xywh; mask = the
    union of the kept queries' masks (all False when none is kept; None when the model has no masks)."""
    keep = instances.scores > score_thresh
    boxes = instances.pred_boxes.tensor[keep].detach().float().cpu().reshape(-1, 4)
    boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    mask = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks
        masks = masks.tensor if hasattr(masks, "tensor") else masks
        masks = masks.detach().cpu().bool()
        if masks.dim() == 4:  # Q x 1 x H x W
            masks = masks[:, 0]
        mask = masks[keep.cpu()].any(dim=0).numpy()
    return boxes.tolist(), mask


class PhraseCutGroundTruth:
    """Tasks of one PhraseCut split with the metadata the analysis subsets need."""

    def __init__(self, ann_dir, split: str = "miniv"):
        root = Path(ann_dir)
        self.split = split
        splits = split.split("_")
        with open(root / "image_data_split.json") as f:
            self.images = {img["image_id"]: img for img in json.load(f) if img["split"] in splits}
        self.tasks: Dict[str, Dict] = OrderedDict()
        self.image_tasks: Dict[int, List[str]] = OrderedDict()
        for s in splits:
            with open(root / f"refer_{s}.json") as f:
                for task in json.load(f):
                    self.tasks[task["task_id"]] = task
                    self.image_tasks.setdefault(task["image_id"], []).append(task["task_id"])
        with open(root / "name_att_rel_count.json") as f:
            counts = json.load(f)
        self._cat_rank = {}
        for i, (name, _) in enumerate(counts["cat"]):
            self._cat_rank.setdefault(name, i)
        self._att_rank = {}
        for i, (name, _) in enumerate(counts["att"]):
            self._att_rank.setdefault(name, i)
        self._subsets: Dict[str, List[str]] = {}

    def subsets(self, task_id: str) -> List[str]:
        """PhraseCut analysis subsets of a task (category/attribute frequency, instance count, phrase form,
        stuff vs object, relative size, attribute family, COCO overlap)."""
        if task_id in self._subsets:
            return self._subsets[task_id]
        task = self.tasks[task_id]
        img = self.images[task["image_id"]]
        ps = task["phrase_structure"]
        atts = ps.get("attributes", [])
        rels = ps.get("relation_descriptions", [])
        name = ps["name"]
        out = {"all"}
        out.add("d_cocotv" if img.get("coco_id") else "d_notcocotv")
        if name in COCO_NAMES:
            out.add("c_coco")
        rank = self._cat_rank.get(name, 501)
        out.add("c20" if rank < 20 else "c21-100" if rank < 100 else "c101-500" if rank < 500 else "c500+")
        out.update(k for k, lim in (("c100", 100), ("c500", 500)) if rank < lim)
        # Attribute frequency: best-ranked attribute; phrases without known attributes land in "a200+".
        arank = min([self._att_rank[a] for a in atts if a in self._att_rank] + [201])
        out.add("a20" if arank < 20 else "a21-100" if arank < 100 else "a101-200" if arank < 200 else "a200+")
        out.update(k for k, lim in (("a100", 100), ("a200", 200)) if arank < lim)
        if atts:
            out.add("p_att")
        if len(atts) > 1:
            out.add("p_attm")
        if rels:
            out.add("p_rel")
        if len(rels) > 1:
            out.add("p_relm")
        if atts and rels:
            out.add("p_att_rel")
        form = {"name": "p_name", "attribute": "p_att+", "relation": "p_rel+", "verbose": "p_verbose"}
        if ps.get("type") in form:
            out.add(form[ps["type"]])
        n_inst = len(task["instance_boxes"])
        if n_inst == 1:
            out.add("i_single")
        elif 1 < n_inst < 5:
            out.add("i_multi")
        elif n_inst >= 5:
            out.add("i_many")
        gt_mask = polygons_to_mask([p for inst in task["Polygons"] for p in inst], img["width"], img["height"])
        rel_size = gt_mask.sum() / (img["width"] * img["height"])
        out.add("s_small" if rel_size < 0.02 else "s_large" if rel_size > 0.2 else "s_mid")
        # Stuff test is a substring test on the category name ("trees" contains "tree").
        out.add("t_stuff" if any(s in name for s in STUFF_NAMES) else "t_obj")
        for fam, words in ATTRIBUTE_FAMILIES.items():
            if any(a in words for a in atts):
                out.add(fam)
        self._subsets[task_id] = [s for s in SUBSET_NAMES if s in out]
        return self._subsets[task_id]


def phrasecut_metrics(
    gt: PhraseCutGroundTruth, stats: Mapping[str, Sequence[float]], with_masks: bool = True
) -> "OrderedDict[str, OrderedDict[str, float]]":
    """Per-subset metrics from per-task ``(iou_box, iou_mask, inter, union)``.

    Returns ``{subset: {"count", "box/mIoU", "box/Pr@θ", "mask/mIoU", "mask/cIoU", "mask/Pr@θ"}}`` for every
    subset with at least one evaluated task; precision uses a strict ``IoU > θ``.
    """
    per_subset: Dict[str, List[Sequence[float]]] = OrderedDict((s, []) for s in SUBSET_NAMES)
    for task_id, st in stats.items():
        for s in gt.subsets(task_id):
            per_subset[s].append(st)
    out: "OrderedDict[str, OrderedDict[str, float]]" = OrderedDict()
    for s, rows in per_subset.items():
        if not rows:
            continue
        arr = np.asarray(rows, dtype=np.float64)
        m = OrderedDict(count=float(len(rows)))
        m["box/mIoU"] = float(arr[:, 0].mean())
        for t in THRESHOLDS:
            m[f"box/Pr@{t}"] = float((arr[:, 0] > t).sum() / len(rows))
        if with_masks:
            m["mask/mIoU"] = float(arr[:, 1].mean())
            u = arr[:, 3].sum()
            m["mask/cIoU"] = float(arr[:, 2].sum() / u) if u > 0 else 0.0
            for t in THRESHOLDS:
                m[f"mask/Pr@{t}"] = float((arr[:, 1] > t).sum() / len(rows))
        out[s] = m
    return out


class PhraseCutEvaluator(DatasetEvaluator):
    """PhraseCut metrics, overall (subset ``all``, unprefixed keys) and per analysis subset
    (``<subset>/<metric>``), in ``{"phrasecut": {...}}``.

    Each task keeps the queries with score > ``score_thresh`` (0.7); their boxes give the box IoU, the union
    of their masks the mask IoU. Mask metrics need ``pred_masks`` in the outputs.

    Inputs read: ``original_id`` (PhraseCut/VG image id), ``task_id``. Outputs read: ``instances.scores``,
    ``instances.pred_boxes``, optional ``instances.pred_masks`` (original size). Alternatively an output may
    carry ``"phrasecut": {"boxes": [[x, y, w, h], ...], "masks": HxW bool}`` (already post-processed).

    A ground-truth task without prediction is an error unless ``allow_missing_tasks`` (official behaviour:
    warned and skipped; ``mask/mIoU_assuming_empty`` then counts it as IoU 0).
    """

    def __init__(
        self,
        dataset_name: str,
        ann_dir: Optional[str] = None,
        split: Optional[str] = None,
        *,
        ground_truth: Optional[PhraseCutGroundTruth] = None,
        score_thresh: float = 0.7,
        allow_missing_tasks: bool = False,
    ):
        """
        Args:
            dataset_name: registered dataset name.
            ann_dir: PhraseCut annotation folder; default metadata ``phrasecut_orig_dir``.
            split: PhraseCut split (``miniv``, ``val``, ``test``); default metadata ``phrasecut_split`` (never
                guessed from the dataset name).
        """
        self._dataset_name = dataset_name
        if ground_truth is None:
            meta = MetadataCatalog.get(dataset_name)
            ann_dir = ann_dir or getattr(meta, "phrasecut_orig_dir", None)
            if ann_dir is None:
                raise ValueError(f"{dataset_name}: set metadata 'phrasecut_orig_dir' to the PhraseCut folder")
            split = split or getattr(meta, "phrasecut_split", None)
            if split is None:
                raise ValueError(
                    f"{dataset_name}: set metadata 'phrasecut_split' (miniv, val or test: which "
                    "refer_<split>.json to score against)"
                )
            ground_truth = PhraseCutGroundTruth(ann_dir, split)
        self._gt = ground_truth
        self._thresh = score_thresh
        self._allow_missing = allow_missing_tasks
        self._stats: Dict[str, Tuple[float, float, float, float]] = {}
        self._with_masks = True

    def reset(self):
        self._stats = {}
        self._with_masks = True

    def add_prediction(self, image_id, task_id: str, boxes_xywh: Sequence, mask: Optional[np.ndarray]) -> None:
        """Score one task from its kept boxes (xywh) and union mask (official prediction format)."""
        if task_id not in self._gt.tasks:
            raise KeyError(
                f"PhraseCut ({self._gt.split}): task {task_id} is not in refer_{self._gt.split}.json; is the "
                "annotation folder/split the one the dataset was built from?"
            )
        task = self._gt.tasks[task_id]
        if image_id is not None and str(task["image_id"]) != str(image_id):
            raise ValueError(f"PhraseCut: task {task_id} belongs to image {task['image_id']}, not {image_id}")
        if mask is None:
            self._with_masks = False
        self._stats[task_id] = phrasecut_task_stats(task, boxes_xywh, mask)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "phrasecut" in out:
                boxes, mask = out["phrasecut"]["boxes"], out["phrasecut"].get("masks")
                mask = None if mask is None else to_numpy(mask, bool)
            else:
                boxes, mask = phrasecut_prediction(out["instances"], self._thresh)
            self.add_prediction(inp.get("original_id"), inp["task_id"], boxes, mask)

    def evaluate(self):
        comm.synchronize()
        parts = comm.gather((self._stats, self._with_masks), dst=0)
        if not comm.is_main_process():
            return {}
        stats: Dict[str, Tuple[float, float, float, float]] = {}
        for part, _ in parts:
            stats.update(part)  # a task repeated by sampler padding has identical stats
        return self.compute(stats, all(m for _, m in parts))

    def compute(self, stats: Mapping[str, Sequence[float]], with_masks: bool = True):
        missing = [t for t in self._gt.tasks if t not in stats]
        if missing and not self._allow_missing:
            raise RuntimeError(
                f"PhraseCut ({self._gt.split}): no prediction for {len(missing)} task(s), e.g. {missing[:10]}"
            )
        if missing:
            logger.warning("PhraseCut: no prediction for %d task(s) (skipped): %s", len(missing), missing[:10])
        if not stats:
            logger.warning("PhraseCut: nothing to evaluate")
            return OrderedDict(phrasecut={})
        table = phrasecut_metrics(self._gt, stats, with_masks)
        results: Dict[str, float] = OrderedDict()
        for subset, metrics in table.items():
            for k, v in metrics.items():
                if k == "count" and subset == "all":
                    continue
                results[k if subset == "all" else f"{subset}/{k}"] = v
        n_eval, n_all = len(stats), len(self._gt.tasks)
        if n_eval < n_all:
            scale = n_eval / n_all
            results["box/mIoU_assuming_empty"] = table["all"]["box/mIoU"] * scale
            if with_masks:
                results["mask/mIoU_assuming_empty"] = table["all"]["mask/mIoU"] * scale
        log_grid(
            f"{self._dataset_name}: PhraseCut ({n_eval}/{n_all} tasks, score > {self._thresh})",
            {s: m for s, m in table.items()},
            "subset",
        )
        return OrderedDict(phrasecut=results)
