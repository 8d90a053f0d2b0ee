"""RefCOCO, RefCOCO+ and RefCOCOg referring expressions (reference §5.3, §7.2)."""

import os

from . import layout
from .mdetr_json import register_mdetr_json

REFEXP_SPLITS = {
    "refcoco": ("train", "val", "testA", "testB"),  # UNC splits
    "refcoco+": ("train", "val", "testA", "testB"),  # UNC splits
    "refcocog": ("train", "val", "test"),  # UMD splits
}


def register_all_refexp(root: str) -> None:
    """``{refcoco,refcoco+,refcocog}_{split}`` and ``refexp_pretrain_val`` (the pre-training validation
    set mixing the three, told apart by each record's ``dataset_name``). All images are COCO train2014.
    """
    image_root = os.path.join(root, layout.COCO, "train2014")
    for dataset, splits in REFEXP_SPLITS.items():
        for split in splits:
            register_mdetr_json(
                f"{dataset}_{split}",
                layout.ann(root, f"finetune_{dataset}_{split}.json"),
                image_root,
                evaluator_type="refexp",
                refexp_dataset=dataset,
            )
    register_mdetr_json(
        "refexp_pretrain_val",
        layout.ann(root, "final_refexp_val.json"),
        image_root,
        evaluator_type="refexp",
    )
