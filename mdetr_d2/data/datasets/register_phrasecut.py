"""PhraseCut referring segmentation (reference §5.9, §7.5)."""

import os

from . import layout
from .mdetr_json import register_mdetr_json

PHRASECUT_SPLITS = ("train", "val", "miniv", "test")


def register_all_phrasecut(root: str) -> None:
    """``phrasecut_{train,val,miniv,test}``; images are Visual Genome (GQA image folder)."""
    for split in PHRASECUT_SPLITS:
        register_mdetr_json(
            f"phrasecut_{split}",
            layout.ann(root, f"finetune_phrasecut_{split}.json"),
            os.path.join(root, layout.GQA_IMAGES),
            evaluator_type="phrasecut",
            phrasecut_orig_dir=os.path.join(root, layout.PHRASECUT),
            phrasecut_split=split,
        )
