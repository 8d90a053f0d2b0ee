"""GQA: detection-only validation and question answering (reference §5.6, §7.6)."""

import os

from . import layout
from .mdetr_json import register_mdetr_json


def register_all_gqa(root: str) -> None:
    """``gqa_det_val`` (pre-training validation, detection only), ``gqa_{all,balanced}_{train,val}``
    (QA training: use both train and val, e.g. ``DATASETS.TRAIN: ("gqa_all_train", "gqa_all_val")``),
    ``gqa_testdev_balanced`` (validation) and the dump splits ``gqa_{test,challenge,submission}``.

    Metadata ``gqa_answer_vocab`` is the path of ``gqa_answer2id.json``; the per-type vocabulary
    ``gqa_answer2id_by_type.json`` sits next to it (``gqa_answer_vocab_by_type``).
    """
    images = os.path.join(root, layout.GQA_IMAGES)
    vocab = dict(
        gqa_answer_vocab=layout.ann(root, "gqa_answer2id.json"),
        gqa_answer_vocab_by_type=layout.ann(root, "gqa_answer2id_by_type.json"),
    )
    register_mdetr_json("gqa_det_val", layout.ann(root, "final_gqa_val.json"), images)
    for split_type in ("all", "balanced"):
        for split in ("train", "val"):
            register_mdetr_json(
                f"gqa_{split_type}_{split}",
                layout.ann(root, f"finetune_gqa_{split}_{split_type}.json"),
                images,
                evaluator_type="gqa",
                gqa_split=split,
                **vocab,
            )
    for split in ("testdev", "test", "challenge", "submission"):
        register_mdetr_json(
            f"gqa_{split}_balanced" if split == "testdev" else f"gqa_{split}",
            layout.ann(root, f"finetune_gqa_{split}_balanced.json"),
            images,
            evaluator_type="gqa",
            gqa_split=split,
            **vocab,
        )
