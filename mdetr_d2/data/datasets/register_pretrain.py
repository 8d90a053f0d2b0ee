"""Pre-training mix (Flickr separateGT train + "mixed") and Visual Genome regions (reference §5.5)."""

import os

from . import layout
from .mdetr_json import register_mdetr_json

# The pre-training recipe: DATASETS.TRAIN = PRETRAIN_TRAIN, DATASETS.TEST = PRETRAIN_VAL.
PRETRAIN_TRAIN = ("flickr_separate_train", "mixed_train")
PRETRAIN_VAL = ("gqa_det_val", "flickr_separate_val", "refexp_pretrain_val")


def register_all_pretrain(root: str) -> None:
    """``mixed_train`` (COCO refexp + GQA + VG regions; images from COCO train2014 or the GQA/VG folder
    according to each record's ``data_source``) and ``vg_{train,val}`` (``final_vg_{split}.json``).
    """
    images = {
        "coco": os.path.join(root, layout.COCO, "train2014"),
        "vg": os.path.join(root, layout.GQA_IMAGES),
    }
    register_mdetr_json("mixed_train", layout.ann(root, "final_mixed_train.json"), images)
    for split in ("train", "val"):
        register_mdetr_json(
            f"vg_{split}",
            layout.ann(root, f"final_vg_{split}.json"),
            os.path.join(root, layout.GQA_IMAGES),
        )
