#!/usr/bin/env python
"""Convert datasets to and from MDETR json: COCO detection json -> MDETR, ODVG <-> MDETR.

    python tools/convert_dataset.py coco2mdetr instances_train2017.json coco_mdetr_train.json \\
        --image-root coco/train2017 [--names-per-caption 0] [--negatives 5] [--tokenizer NAME]
    python tools/convert_dataset.py odvg2mdetr o365v1_train_od.json o365_mdetr.json \\
        --label-map o365v1_label_map.json
    python tools/convert_dataset.py mdetr2odvg final_flickr_separateGT_train.json flickr_vg.json
    python tools/convert_dataset.py mdetr2odvg my_mdetr.json my_od.json --detection

Each conversion prints its counts, warns about what the target format cannot hold, and validates
the output with the checks of ``datasets/register.py --check`` (images with --image-root, positive
maps with --tokenizer). Exit status 1 when the validation finds a problem.
"""
from __future__ import annotations

import argparse
import logging
import sys

from mdetr_d2.data.converters import (
    convert_coco_to_mdetr,
    convert_mdetr_to_odvg,
    convert_odvg_to_mdetr,
)
from mdetr_d2.structures import build_tokenizer

logger = logging.getLogger("mdetr_d2.convert_dataset")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="file to convert")
    parser.add_argument("output", help="file to write")
    parser.add_argument("--image-root", help="image folder: the validation checks sampled images")
    parser.add_argument("--tokenizer", help="HF name or local folder: the validation checks that "
                        "every box reaches a token")
    parser.add_argument("--samples", type=int, default=20, help="records validated (default 20)")


def _add_caption_options(parser: argparse.ArgumentParser) -> None:
    # Defaults are the library's (None here = not given): an ODVG grounding file takes none of them.
    parser.add_argument("--names-per-caption", type=int,
                        help="0 (default): one datapoint per image naming all its categories; k: "
                        "one per group of k names (1: one per category, as MDETR's LVIS data)")
    parser.add_argument("--negatives", type=int,
                        help="absent categories named per image without boxes (default 0; -1: all "
                        "of LVIS's neg_category_ids)")
    parser.add_argument("--seed", type=int, help="seed of the negative sampling (default 0)")
    parser.add_argument("--separator", help="text between two names (default '. ')")
    parser.add_argument("--raw-names", dest="clean_names", action="store_false", default=None,
                        help="write category names as they are (default: MDETR's LVIS cleaning)")
    parser.add_argument("--dataset-name", help="the datapoints' dataset_name field")


def _caption_options(args) -> dict:
    keys = ("names_per_caption", "negatives", "seed", "separator", "clean_names", "dataset_name")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    coco = sub.add_parser("coco2mdetr", help="COCO-format detection json -> MDETR json")
    _add_common(coco)
    _add_caption_options(coco)
    odvg = sub.add_parser("odvg2mdetr", help="ODVG jsonl (grounding or detection) -> MDETR json")
    _add_common(odvg)
    odvg.add_argument("--label-map", help="detection variant: the *_label_map.json")
    _add_caption_options(odvg)
    back = sub.add_parser("mdetr2odvg", help="MDETR json -> ODVG jsonl")
    _add_common(back)
    back.add_argument("--detection", action="store_true",
                      help="write the detection variant (boxes and classes, no text) and its "
                      "label map")
    back.add_argument("--label-map", help="with --detection: where to write the label map "
                      "(default <output>_label_map.json)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    tokenizer = None
    if args.tokenizer:
        tokenizer = build_tokenizer(args.tokenizer)
    common = {"image_root": args.image_root, "tokenizer": tokenizer, "samples": args.samples}
    if args.command == "coco2mdetr":
        report = convert_coco_to_mdetr(args.input, args.output, **common, **_caption_options(args))
    elif args.command == "odvg2mdetr":
        report = convert_odvg_to_mdetr(args.input, args.output, label_map=args.label_map,
                                       **common, **_caption_options(args))
    else:
        report = convert_mdetr_to_odvg(args.input, args.output, detection=args.detection,
                                       label_map_out=args.label_map, **common)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts.items())
    logger.info("wrote %s: %s", args.output, counts)
    logger.info("validation: %s", report.validation.summary())
    for problem in report.validation.problems:
        logger.error("%s", problem)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
