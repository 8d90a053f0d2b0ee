"""Flickr30k Entities phrase grounding (reference §5.4, §7.4)."""

import os

from . import layout
from .mdetr_json import register_mdetr_json

FLICKR_SPLITS = ("train", "val", "test")


def register_all_flickr(root: str) -> None:
    """``flickr_{separate,merged}_{train,val,test}`` (separateGT / mergedGT boxes).

    Test images are read from the ``val`` image folder, as the official code does (§5.4).
    """
    for gt_type in ("separate", "merged"):
        for split in FLICKR_SPLITS:
            image_split = "train" if split == "train" else "val"
            register_mdetr_json(
                f"flickr_{gt_type}_{split}",
                layout.ann(root, f"final_flickr_{gt_type}GT_{split}.json"),
                os.path.join(root, layout.FLICKR_IMAGES, image_split),
                evaluator_type="flickr",
                flickr_entities_dir=os.path.join(root, layout.FLICKR_ENTITIES),
                flickr_split=split,
                flickr_gt_type=gt_type,
            )
