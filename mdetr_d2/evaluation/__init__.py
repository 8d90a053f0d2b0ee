"""Detectron2 evaluators for every MDETR benchmark (reference §7).

All evaluators gather to rank 0 with ``detectron2.utils.comm`` (repeated datapoints collapse), return an
``OrderedDict`` of ``{task: {metric: value}}`` with values as fractions in [0, 1] (the official logs' scale)
and log their tables. :func:`build_mdetr_evaluators` picks them from the dataset metadata.

Metadata attributes read (``MetadataCatalog.get(dataset_name)``):

* ``evaluator_type``: a str or list of str among ``refexp``, ``clevrref``, ``flickr``, ``phrasecut``,
  ``gqa``, ``clevr``, ``lvis``, ``coco``, ``coco_agnostic``; required, never guessed from the dataset
  name (``register_mdetr_json`` sets ``coco_agnostic`` by default). ``coco`` (what
  ``register_coco_instances`` and Detectron2's builtin COCO sets write) is scored with
  Detectron2's ``COCOEvaluator``; ``lvis`` with the fixed-AP evaluator and Detectron2's ``LVISEvaluator``. Both read the model's class-prompt detections (contiguous
  ``pred_classes``).
* ``json_file``: the MDETR json (RefExp / CLEVR-Ref+ ground truth, class-agnostic AP).
* ``refexp_breakdown_field`` (optional): an image-entry field of the RefExp json whose values split P@k
  into extra rows (see :class:`RefExpEvaluator`).
* Flickr (all required): ``flickr_entities_dir``, ``flickr_split`` (``val``/``test``: the split list of the
  Entities folder), ``flickr_gt_type`` (``separate``/``merged``: ANY-BOX or MERGED-BOX as the main protocol).
* ``phrasecut_orig_dir`` and ``phrasecut_split`` (``miniv``/``val``/``test``) (required for PhraseCut),
  ``phrasecut_allow_missing_tasks`` (bool, default False).
* ``gqa_answer_vocab``, ``gqa_answer_vocab_by_type`` (GQA: to read answer ids of a model without vocabulary).
* ``lvis_json`` (LVIS-format ground truth for fixed AP, e.g. ``lvis_v1_minival.json``).

Config keys read (all optional, defaults in brackets): ``MODEL.MDETR.MASKS`` (segm AP, PhraseCut masks),
``MODEL.MDETR.QA_HEAD`` (GQA/CLEVR QA vs detection-only), ``MODEL.MDETR.NO_DETECTION`` (QA only),
``TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP`` [True], ``TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH`` [0.7],
``TEST.MDETR_EVAL.LVIS_TOPK`` [10000], ``TEST.DETECTIONS_PER_IMAGE`` [100] (the standard COCO / LVIS
AP's detections per image).
"""
import logging
import os
from typing import List, Optional, Tuple

from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators

from .coco_agnostic import ClassAgnosticCOCOEvaluator
from .flickr import FlickrEntitiesGroundTruth, FlickrEvaluator, parse_flickr_boxes, parse_flickr_sentences
from .lvis_fixed_ap import LVISFixedAPEvaluator, NumpyCompatLVISEvaluator, PerCategoryTopK
from .phrasecut import PhraseCutEvaluator, PhraseCutGroundTruth, phrasecut_prediction
from .qa import CLEVREvaluator, GQAEvaluator
from .refexp import ClevrRefEvaluator, RefExpEvaluator

logger = logging.getLogger(__name__)

__all__ = [
    "build_mdetr_evaluators",
    "evaluation_inputs",
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
    "NumpyCompatLVISEvaluator",
    "PerCategoryTopK",
]

EVALUATOR_TYPES = (
    "refexp", "clevrref", "flickr", "phrasecut", "gqa", "clevr", "lvis", "coco", "coco_agnostic"
)


QA_TYPES = ("gqa", "clevr")


def _evaluator_types(dataset_name: str) -> List[str]:
    """The metadata ``evaluator_type`` of a dataset as a list (never guessed from its name).

    Raises:
        ValueError: the dataset's metadata has no ``evaluator_type``.
    """
    types = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    if not types:
        raise ValueError(
            f"{dataset_name}: no metadata 'evaluator_type' to choose its evaluators with; set it "
            f"when registering the dataset (one of {EVALUATOR_TYPES}, see datasets/README.md)"
        )
    return [types] if isinstance(types, str) else list(types)


def evaluation_inputs(dataset_name: str) -> List[Tuple[str, Optional[str]]]:
    """What the evaluators of a dataset read besides its json and images, as ``(what, path)``; the path
    is None when the metadata key naming it is not set. Lets ``datasets/register.py --check`` report a
    missing Flickr30k Entities folder before a run, not when the first evaluation starts."""
    meta = MetadataCatalog.get(dataset_name)
    out: List[Tuple[str, Optional[str]]] = []

    def under(key: str, what: str, *names: str) -> None:
        root = getattr(meta, key, None)
        if root is None:
            out.append((f"metadata {key!r} ({what})", None))
            return
        out.extend((f"{what}: {name}", os.path.join(root, name)) for name in names)

    for t in _evaluator_types(dataset_name):
        if t == "flickr":
            split = getattr(meta, "flickr_split", None)
            if split is None:
                out.append(("metadata 'flickr_split' (Flickr30k Entities split list)", None))
            under("flickr_entities_dir", "Flickr30k Entities", *([f"{split}.txt"] if split else []),
                  "Annotations", "Sentences")
        elif t == "phrasecut":
            split = getattr(meta, "phrasecut_split", None)
            refer = [f"refer_{s}.json" for s in split.split("_")] if split else []
            if split is None:
                out.append(("metadata 'phrasecut_split' (PhraseCut split)", None))
            under("phrasecut_orig_dir", "PhraseCut folder", "image_data_split.json", *refer,
                  "name_att_rel_count.json")
        elif t == "lvis":
            out.append(("LVIS json", getattr(meta, "lvis_json", None) or getattr(meta, "json_file", None)))
        elif t == "gqa":
            for key in ("gqa_answer_vocab", "gqa_answer_vocab_by_type"):
                out.append((f"GQA answer vocabulary ({key})", getattr(meta, key, None)))
    return out


def _evaluators_from_config(cfg, dataset_name: str, output_dir: Optional[str] = None) -> dict:
    return {
        "dataset_name": dataset_name,
        "output_dir": output_dir,
        "qa_head": str(cfg.MODEL.MDETR.QA_HEAD),
        "no_detection": bool(cfg.MODEL.MDETR.NO_DETECTION),
        "masks": bool(cfg.MODEL.MDETR.MASKS),
        "class_agnostic_ap": bool(cfg.TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP),
        "phrasecut_score_thresh": float(cfg.TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH),
        "lvis_topk": int(cfg.TEST.MDETR_EVAL.LVIS_TOPK),
        "detections_per_image": int(cfg.TEST.DETECTIONS_PER_IMAGE),
    }


@configurable(from_config=_evaluators_from_config)
def build_mdetr_evaluators(
    dataset_name: str,
    output_dir: Optional[str] = None,
    *,
    qa_head: str = "none",
    no_detection: bool = False,
    masks: bool = False,
    class_agnostic_ap: bool = True,
    phrasecut_score_thresh: float = 0.7,
    lvis_topk: int = 10000,
    detections_per_image: int = 100,
) -> DatasetEvaluators:
    """The evaluators of one MDETR evaluation dataset (call from the trainer's ``build_evaluator``
    as ``build_mdetr_evaluators(cfg, dataset_name, output_dir)``, or with the keywords).

    The task evaluators come from metadata ``evaluator_type`` (an error when it is missing); the
    class-agnostic COCO AP that the official code always computes is added for every type with boxes in its
    ``json_file`` (not for LVIS and COCO detection sets, scored per class), unless
    ``class_agnostic_ap`` is False (``TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP``). QA accuracy (``gqa``, ``clevr``) needs a model with a QA head
    (``qa_head``, MODEL.MDETR.QA_HEAD): without one (e.g. the CLEVR detection pre-training) those datasets
    get box AP only. A QA-only model (``no_detection``, MODEL.MDETR.NO_DETECTION, official
    ``--no_detection``) gets QA accuracy only, as officially.
    """
    meta = MetadataCatalog.get(dataset_name)
    has_qa = qa_head not in ("", "none")
    types = _evaluator_types(dataset_name)
    unknown = [t for t in types if t not in EVALUATOR_TYPES]
    if unknown:
        raise ValueError(
            f"{dataset_name}: unknown evaluator_type {', '.join(map(repr, unknown))}; expected one of "
            f"{EVALUATOR_TYPES}"
        )
    skipped = [t for t in types if (t in QA_TYPES and not has_qa) or (t not in QA_TYPES and no_detection)]
    if skipped:
        why = "MODEL.MDETR.NO_DETECTION is on" if no_detection else "the model has no QA head"
        logger.info("%s: %s, so no %s evaluation", dataset_name, why, skipped)
    evaluators: List[DatasetEvaluator] = []
    for t in types:
        if t in skipped:
            continue
        if t == "refexp":
            evaluators.append(
                RefExpEvaluator(dataset_name, breakdown_field=getattr(meta, "refexp_breakdown_field", None))
            )
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
            evaluators.append(LVISFixedAPEvaluator(dataset_name, topk=lvis_topk))
            evaluators.append(NumpyCompatLVISEvaluator(
                dataset_name, output_dir=output_dir, max_dets_per_image=detections_per_image))
        elif t == "coco":
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_dir,
                                            max_dets_per_image=detections_per_image))
    want_ap = not no_detection and (
        "coco_agnostic" in types or (class_agnostic_ap and not {"lvis", "coco"} & set(types))
    )
    json_file = getattr(meta, "json_file", None)
    if want_ap and json_file:
        ap = ClassAgnosticCOCOEvaluator(dataset_name, json_file, use_masks=masks)
        if ap.has_annotations:
            evaluators.append(ap)
        elif "coco_agnostic" in types:
            raise ValueError(f"{dataset_name}: class-agnostic AP requested but {json_file} has no boxes")
    if not evaluators:
        raise ValueError(
            f"{dataset_name}: no MDETR evaluator applies (evaluator_type {types}, QA head {qa_head!r}, "
            f"NO_DETECTION {no_detection})"
        )
    logger.info("%s: evaluators %s", dataset_name, [type(e).__name__ for e in evaluators])
    return DatasetEvaluators(evaluators)
