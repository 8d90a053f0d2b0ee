"""Registering a written synthetic world in Detectron2's catalogs.

The library never registers the world: whoever uses it does, as Detectron2's ``projects/`` register
their own datasets. ``tools/train_net.py`` and ``tools/lazyconfig_train_net.py`` register the
default folder (:func:`default_synthetic_root`) so that ``configs/synthetic/`` runs as published,
``tools/synthetic_job.py`` the folder it generates, tests their temporary worlds.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from mdetr_d2.data.datasets import dataset_root, register_mdetr_json

from .language import QA_ATTRIBUTES
from .scenes import SPLITS
from .writers import DETECTION, FAMILIES, json_paths

logger = logging.getLogger(__name__)

# The project's evaluator of each caption family (metadata evaluator_type).
EVALUATOR_TYPES = {"refexp": "refexp", "flickr": "flickr", "qa": "gqa"}


def default_synthetic_root() -> str:
    """``$MDETR_DATASETS/synthetic`` (default ``datasets/synthetic``), read at call time: where
    ``tools/make_synthetic.py`` and ``tools/synthetic_job.py`` write the world by default."""
    return os.path.join(dataset_root(), "synthetic")


def _family_metadata(family: str, root: Path, split: str) -> dict:
    """The metadata the evaluators of a caption family read."""
    metadata = {"evaluator_type": EVALUATOR_TYPES[family]}
    if family == "qa":  # the keys of the GQA registration
        metadata.update(
            gqa_answer_vocab=str(root / "synthetic_qa_answer2id.json"),
            gqa_answer_vocab_by_type=str(root / "synthetic_qa_answer2id_by_type.json"),
            gqa_split=split, qa_attributes=list(QA_ATTRIBUTES))
    if family == "refexp":  # P@k per expression type as well
        metadata.update(refexp_breakdown_field="expression_type")
    if family == "flickr":  # the Flickr evaluator reads the Flickr30k Entities layout
        metadata.update(flickr_entities_dir=str(root / "flickr_entities" / split),
                        flickr_split=split, flickr_gt_type="separate")
    return metadata


def register_synthetic(root: str | os.PathLike, *, keep_existing: bool = False) -> list[str]:
    """Register ``synthetic_{refexp,flickr,qa,detection}_{train,val,test}`` from a generated folder.

    The caption families use :func:`mdetr_d2.data.register_mdetr_json`, with the metadata the
    project's evaluators read (``evaluator_type`` refexp / flickr / gqa, the Flickr30k Entities
    folder, the GQA-format answer vocabularies); the detection view uses Detectron2's
    ``register_coco_instances`` (``evaluator_type`` coco; ``thing_classes`` = the shapes once
    loaded).
    All get ``text_encoder``, the folder to use as ``MODEL.MDETR.TEXT_ENCODER.NAME``.
    Nothing is read at registration. A name already registered for the same root is kept; one
    registered for another root is replaced (e.g. a demo generating into a temporary folder),
    unless ``keep_existing``.

    Args:
        root: the folder :func:`mdetr_synthetic.generate_synthetic_dataset` wrote (or will write).
        keep_existing: keep every name registered already, whatever its root (the training tools
            register the default folder this way, so a world registered before they run stays).

    Returns:
        the names (re)registered by this call.
    """
    root = Path(root)
    names = []
    for family in FAMILIES + (DETECTION,):
        for split in SPLITS:
            name = f"synthetic_{family}_{split}"
            if name in DatasetCatalog.list():
                if keep_existing or MetadataCatalog.get(name).get("dataset_root") == str(root):
                    continue
                logger.info("re-registering %s from %s", name, root)
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            metadata = {"dataset_root": str(root), "text_encoder": str(root / "text_encoder")}
            json_file, image_root = str(json_paths(root)[name]), str(root / "images" / split)
            if family == DETECTION:
                register_coco_instances(name, metadata, json_file, image_root)
            else:
                register_mdetr_json(name, json_file, image_root, **metadata,
                                    **_family_metadata(family, root, split))
            names.append(name)
    return names
