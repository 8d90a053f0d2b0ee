"""CLEVR family: CLEVR (medium / full / CoGenT), CLEVR-Humans and CLEVR-Ref+ (reference §5.7, §5.8)."""

import os

from . import layout
from .mdetr_json import load_clevr_questions, register_mdetr_dataset, register_mdetr_json

CLEVR_V1 = "CLEVR_v1.0"
CLEVR_COGENT = "CLEVR_CoGenT_v1.0"
CLEVR_HUMANS = "CLEVR-Humans"
CLEVR_REF = "clevr_ref+"


def register_all_clevr(root: str) -> None:
    """Register the CLEVR family.

    * ``clevr_{medium,full}_{train,val}``: MDETR json from ``clevr/annotations/<variant>/<split>.json``,
      images ``clevr/CLEVR_v1.0/images/<split>``.
    * ``clevr_cogent_{medium,full}_{trainA,valA}``: ``clevr/annotations/cogent_<variant>/{train,val}.json``,
      images ``clevr/CLEVR_CoGenT_v1.0/images/{trainA,valA}``.
    * Question-only (original CLEVR question json, no boxes): ``clevr_questions_{val,test}``,
      ``clevr_cogent_questions_{valA,valB,testA,testB}``, ``clevr_humans_{train,val,test}``.
    * ``clevrref_{train,val,test}``: CLEVR-Ref+ MDETR json ``clevr_ref+/annotations/<split>.json``,
      images ``clevr_ref+/images/<split>``.
    """
    clevr = os.path.join(root, layout.CLEVR)
    annotations = os.path.join(clevr, "annotations")
    for variant in ("medium", "full"):
        for split in ("train", "val"):
            register_mdetr_json(
                f"clevr_{variant}_{split}",
                os.path.join(annotations, variant, f"{split}.json"),
                os.path.join(clevr, CLEVR_V1, "images", split),
                evaluator_type="clevr",
            )
            cogent_split = f"{split}A"
            register_mdetr_json(
                f"clevr_cogent_{variant}_{cogent_split}",
                os.path.join(annotations, f"cogent_{variant}", f"{split}.json"),
                os.path.join(clevr, CLEVR_COGENT, "images", cogent_split),
                evaluator_type="clevr",
            )
    for split in ("val", "test"):
        register_mdetr_dataset(
            f"clevr_questions_{split}",
            load_clevr_questions,
            os.path.join(clevr, CLEVR_V1, "questions", f"CLEVR_{split}_questions.json"),
            os.path.join(clevr, CLEVR_V1, "images", split),
            evaluator_type="clevr",
        )
    for split in ("valA", "valB", "testA", "testB"):
        register_mdetr_dataset(
            f"clevr_cogent_questions_{split}",
            load_clevr_questions,
            os.path.join(clevr, CLEVR_COGENT, "questions", f"CLEVR_{split}_questions.json"),
            os.path.join(clevr, CLEVR_COGENT, "images", split),
            evaluator_type="clevr",
        )
    for split in ("train", "val", "test"):
        # CLEVR-Humans questions are about the CLEVR v1.0 images (test questions on val images).
        image_split = "train" if split == "train" else "val"
        register_mdetr_dataset(
            f"clevr_humans_{split}",
            load_clevr_questions,
            os.path.join(clevr, CLEVR_HUMANS, f"CLEVR-Humans-{split}.json"),
            os.path.join(clevr, CLEVR_V1, "images", image_split),
            evaluator_type="clevr",
        )
        register_mdetr_json(
            f"clevrref_{split}",
            os.path.join(root, CLEVR_REF, "annotations", f"{split}.json"),
            os.path.join(root, CLEVR_REF, "images", split),
            evaluator_type="clevrref",
        )
