"""LVIS modulated detection fine-tuning sets and the LVIS v1 minival evaluation set (reference §5.10)."""

import os

from . import layout
from .mdetr_json import load_lvis_v1_json, register_mdetr_dataset, register_mdetr_json

LVIS_SUBSETS = {1: "lvis1", 10: "lvis10", 100: "lvis"}  # percent -> file stem


def register_all_lvis(root: str) -> None:
    """``lvis{1,10,100}_{train,val}`` (MDETR json, one record per image and (negative) category) and
    ``lvis_v1_minival`` (LVIS json, per image, no caption; evaluated with category-name prompts).

    ``file_name`` in the LVIS MDETR jsons is ``train2017/...`` / ``val2017/...``, relative to ``coco/``.
    """
    coco = os.path.join(root, layout.COCO)
    minival = os.path.join(root, layout.LVIS, "lvis_v1_minival.json")
    for percent, stem in LVIS_SUBSETS.items():
        for split in ("train", "val"):
            register_mdetr_json(
                f"lvis{percent}_{split}",
                layout.ann(root, f"finetune_{stem}_{split}.json"),
                coco,
                lvis_json=minival,  # class-agnostic AP during fine-tuning; LVIS AP on lvis_v1_minival
            )
    register_mdetr_dataset(
        "lvis_v1_minival",
        load_lvis_v1_json,
        minival,
        coco,
        evaluator_type="lvis",
        lvis_json=minival,
    )
