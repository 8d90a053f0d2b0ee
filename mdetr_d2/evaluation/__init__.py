"""Detectron2 evaluators for every MDETR benchmark (reference §7).

All evaluators gather to rank 0 with ``detectron2.utils.comm`` (repeated datapoints collapse), return an
``OrderedDict`` of ``{task: {metric: value}}`` with values as fractions in [0, 1] (the official logs' scale)
and log their tables. :func:`build_mdetr_evaluators` picks them from the dataset metadata.

Metadata attributes read (``MetadataCatalog.get(dataset_name)``):

* ``evaluator_type``: a str or list of str among ``refexp``, ``clevrref``, ``flickr``, ``phrasecut``,
  ``gqa``, ``clevr``, ``lvis``, ``coco_agnostic``; inferred from the dataset name when absent.
* ``json_file``: the MDETR json (RefExp / CLEVR-Ref+ ground truth, class-agnostic AP).
* ``flickr_entities_dir`` (required for Flickr), ``flickr_subset`` (``val``/``test``), ``flickr_gt_type``
  (``separate``/``merged``: which protocol is logged as the main one).
* ``phrasecut_orig_dir`` (required for PhraseCut), ``phrasecut_split`` (``miniv``/``val``/``test``),
  ``phrasecut_allow_missing_tasks`` (bool, default False).
* ``lvis_json`` (LVIS-format ground truth for fixed AP, e.g. ``lvis_v1_minival.json``).

Config keys read (all optional, defaults in brackets): ``MODEL.MDETR.MASKS`` (segm AP, PhraseCut masks),
``MODEL.MDETR.QA_HEAD`` (GQA/CLEVR QA vs detection-only), ``TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP`` [True],
``TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH`` [0.7], ``TEST.MDETR_EVAL.LVIS_TOPK`` [10000].
"""
import logging
from typing import List, Optional

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from .coco_agnostic import ClassAgnosticCOCOEvaluator
from .flickr import FlickrEntitiesGroundTruth, FlickrEvaluator, parse_flickr_boxes, parse_flickr_sentences
from .lvis_fixed_ap import LVISFixedAPEvaluator, PerCategoryTopK
from .phrasecut import PhraseCutEvaluator, PhraseCutGroundTruth, phrasecut_prediction
from .qa import CLEVREvaluator, GQAEvaluator
from .refexp import ClevrRefEvaluator, RefExpEvaluator

logger = logging.getLogger(__name__)

__all__ = [
    "build_mdetr_evaluators",
    "infer_evaluator_types",
    "RefExpEvaluator",
    "ClevrRefEvaluator",
    "FlickrEvaluator",
    "FlickrEntitiesGroundTruth",
    "parse_flickr_boxes",
    "parse_flickr_sentences",
    "PhraseCutEvaluator",
    "PhraseCutGroundTruth",
    "phrasecut_prediction",
    "ClassAgnosticCOCOEvaluator",
    "GQAEvaluator",
    "CLEVREvaluator",
    "LVISFixedAPEvaluator",
    "PerCategoryTopK",
]

EVALUATOR_TYPES = ("refexp", "clevrref", "flickr", "phrasecut", "gqa", "clevr", "lvis", "coco_agnostic")


def infer_evaluator_types(dataset_name: str, qa_head: str = "none") -> List[str]:
    """Evaluator types from a dataset name (used when the metadata has no ``evaluator_type``)."""
    name = dataset_name.lower()
    if "clevrref" in name or "clevr_ref" in name:
        return ["clevrref"]
    if "refcoco" in name or "refexp" in name:
        return ["refexp"]
    if "flickr" in name:
        return ["flickr"]
    if "phrasecut" in name:
        return ["phrasecut"]
    if "lvis" in name:
        return ["lvis"]
    if "gqa" in name:
        return ["gqa"] if qa_head.startswith("gqa") else ["coco_agnostic"]
    if "clevr" in name:
        return ["clevr"] if qa_head == "clevr" else ["coco_agnostic"]
    return ["coco_agnostic"]


def _evaluators_from_config(cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
    return {
        "dataset_name": dataset_name,
        "output_dir": output_dir,
        "qa_head": str(cfg.MODEL.MDETR.QA_HEAD),
        "masks": bool(cfg.MODEL.MDETR.MASKS),
        "class_agnostic_ap": bool(cfg.TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP),
        "phrasecut_score_thresh": float(cfg.TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH),
        "lvis_topk": int(cfg.TEST.MDETR_EVAL.LVIS_TOPK),
    }


@configurable(from_config=_evaluators_from_config)
def build_mdetr_evaluators(
    dataset_name: str,
    output_dir: Optional[str] = None,
    *,
    qa_head: str = "none",
    masks: bool = False,
    class_agnostic_ap: bool = True,
    phrasecut_score_thresh: float = 0.7,
    lvis_topk: int = 10000,
) -> DatasetEvaluators:
    """The evaluators of one MDETR evaluation dataset (call from the trainer's ``build_evaluator``
    as ``build_mdetr_evaluators(cfg, dataset_name, output_dir)``, or with the keywords).

    The task evaluators come from metadata ``evaluator_type`` (or the dataset name); the class-agnostic COCO
    AP that the official code always computes is added for every type with boxes in its ``json_file``
    (not for LVIS, which has its own fixed AP), unless ``class_agnostic_ap`` is False
    (``TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP``).
    """
    meta = MetadataCatalog.get(dataset_name)
    types = getattr(meta, "evaluator_type", None) or infer_evaluator_types(dataset_name, qa_head)
    types = [types] if isinstance(types, str) else list(types)
    evaluators: List[DatasetEvaluator] = []
    for t in types:
        if t == "refexp":
            evaluators.append(RefExpEvaluator(dataset_name))
        elif t == "clevrref":
            evaluators.append(ClevrRefEvaluator(dataset_name))
        elif t == "flickr":
            evaluators.append(FlickrEvaluator(dataset_name))
        elif t == "phrasecut":
            evaluators.append(
                PhraseCutEvaluator(
                    dataset_name,
                    score_thresh=phrasecut_score_thresh,
                    allow_missing_tasks=bool(getattr(meta, "phrasecut_allow_missing_tasks", False)),
                )
            )
        elif t == "gqa":
            evaluators.append(GQAEvaluator(dataset_name, output_dir))
        elif t == "clevr":
            evaluators.append(CLEVREvaluator(dataset_name, output_dir))
        elif t == "lvis":
            evaluators.append(
                LVISFixedAPEvaluator(dataset_name, topk=lvis_topk)
            )
        elif t != "coco_agnostic":
            raise ValueError(f"{dataset_name}: unknown evaluator_type {t!r}; expected one of {EVALUATOR_TYPES}")
    want_ap = "coco_agnostic" in types or (
        class_agnostic_ap and "lvis" not in types
    )
    json_file = getattr(meta, "json_file", None)
    if want_ap and json_file:
        ap = ClassAgnosticCOCOEvaluator(dataset_name, json_file, use_masks=masks)
        if ap.has_annotations:
            evaluators.append(ap)
        elif "coco_agnostic" in types:
            raise ValueError(f"{dataset_name}: class-agnostic AP requested but {json_file} has no boxes")
    if not evaluators:
        raise ValueError(f"{dataset_name}: no MDETR evaluator applies (evaluator_type {types})")
    logger.info("%s: evaluators %s", dataset_name, [type(e).__name__ for e in evaluators])
    return DatasetEvaluators(evaluators)
