"""Folder layout under the datasets root (``$MDETR_DATASETS``); documented in ``datasets/README.md``."""

import os

ANNOTATIONS = (
    "mdetr_annotations"  # the released "MDETR annotations" archive (final_*.json, finetune_*.json)
)
COCO = "coco"  # train2014/, train2017/, val2017/
FLICKR_IMAGES = os.path.join("flickr30k", "images")  # train/, val/ (test images live in val/)
FLICKR_ENTITIES = os.path.join("flickr30k", "flickr30k_entities")  # Annotations/, Sentences/, *.txt
GQA_IMAGES = os.path.join("gqa", "images")  # the GQA / Visual Genome images
PHRASECUT = "phrasecut"  # the original PhraseCut annotation folder (for evaluation)
LVIS = "lvis"  # lvis_v1_minival.json
CLEVR = "clevr"


def ann(root: str, file_name: str) -> str:
    """Path of an MDETR annotation file under the datasets root."""
    return os.path.join(root, ANNOTATIONS, file_name)
