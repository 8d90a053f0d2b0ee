#!/usr/bin/env python
"""Draw what MDETR grounds: boxes labelled with the words they are tied to, masks, and QA answers.

    python tools/demo.py --config-file configs/synthetic/mdetr_synthetic.yaml \
        --input img1.png img2.png --caption "the small red circle" --output out/ \
        [--opts MODEL.WEIGHTS path/to/model.pth]

Also works with an official checkpoint directly: ``--official refcoco_resnet101_checkpoint.pth``, or
by name, ``--official mdetr://refcoco_resnet101`` (downloaded once; the model config then comes from
the checkpoint's own arguments).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import cv2
from detectron2.config import get_cfg
from tqdm import tqdm

from mdetr_d2 import add_mdetr_config
from mdetr_d2.checkpoint import official_cfg
from mdetr_d2.predictor import MDETRPredictor
from mdetr_d2.visualization import draw_prediction

logger = logging.getLogger("mdetr_d2.demo")


def build_cfg(args):
    if args.official:
        cfg = official_cfg(args.official, text_encoder=args.text_encoder)
    else:
        cfg = get_cfg()
        add_mdetr_config(cfg)
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.DEVICE == "cuda" and not _cuda():
        logger.warning("no CUDA device: running on CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", help="mdetr_d2 YAML config")
    parser.add_argument("--official", help="official MDETR checkpoint file or released name "
                        "(mdetr://refcoco_resnet101); the config comes from its args")
    parser.add_argument("--text-encoder", help="with --official: HF name or local folder of the text encoder")
    parser.add_argument("--input", nargs="+", required=True, help="image files")
    parser.add_argument("--caption", required=True, nargs="+",
                        help="one caption for all images, or one per image")
    parser.add_argument("--output", required=True, help="folder for the annotated images")
    parser.add_argument("--top-k", type=int, default=3, help="boxes drawn per image at most")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.config_file or args.official):
        parser.error("give --config-file or --official")
    captions = args.caption if len(args.caption) > 1 else args.caption * len(args.input)
    if len(captions) != len(args.input):
        parser.error(f"{len(args.input)} images but {len(captions)} captions")
    predictor = MDETRPredictor(build_cfg(args))
    os.makedirs(args.output, exist_ok=True)
    for path, caption in tqdm(list(zip(args.input, captions)), desc="demo", disable=len(captions) < 4):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            sys.exit(f"error: cannot read image {path}")
        prediction = predictor(image, caption)
        picture = draw_prediction(image[:, :, ::-1], prediction, caption, args.top_k)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + "_mdetr.png")
        cv2.imwrite(out, picture[:, :, ::-1])
        best = prediction["instances"].scores.argmax()
        logger.info("%s: %r -> %r (score %.2f)%s -> %s", path, caption,
                    prediction["instances"].pred_phrases[int(best)], float(prediction["instances"].scores[best]),
                    f" answer {prediction['qa']['answer']!r}" if "qa" in prediction else "", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
