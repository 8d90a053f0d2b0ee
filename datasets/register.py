#!/usr/bin/env python
"""Register every MDETR dataset and, with ``--check``, report which are on disk and validate samples.

Usage (from the repository root, with mdetr_d2 installed)::

    python datasets/register.py --check                    # every dataset
    python datasets/register.py --check --only flickr_ refcoco --samples 50
    python datasets/register.py --check --only my_data --add my_data data/train.json data/images
    MDETR_DATASETS=/data/mdetr python datasets/register.py --check

Importing ``mdetr_d2.data`` is what registers the datasets (lazily, under ``$MDETR_DATASETS``); this
script adds the synthetic example world (``$MDETR_DATASETS/synthetic``, as ``tools/train_net.py``
does) and the report. ``--check`` loads each present annotation file (the pre-training set
takes a while), checks that the sampled images exist and, with ``--tokenizer`` (the text encoder's
name or folder), that every caption can be encoded within the text encoder's positions (each record
that cannot is named) and builds the sampled records' positive maps; each problem is explained (the
record, the field, what was expected, a right value). It also
checks that the inputs the dataset's evaluators read are there (Flickr30k Entities folder and split
list, PhraseCut folder, LVIS json, GQA answer vocabularies): ``NO-EVAL`` when one is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from detectron2.data import DatasetCatalog, MetadataCatalog

from mdetr_d2.data import MDETR_DATASET_NAMES, dataset_root, register_mdetr_json
from mdetr_d2.data.datasets.check import check_records, explain_error
from mdetr_d2.evaluation import evaluation_inputs
from mdetr_d2.structures import build_tokenizer, max_caption_tokens
from mdetr_synthetic import default_synthetic_root, register_synthetic


MAX_LISTED = 100  # problems listed per dataset (each names its record)


def _paths_of(meta) -> list[str]:
    roots = meta.image_root.values() if isinstance(meta.image_root, dict) else [meta.image_root]
    return [meta.json_file, *roots]


def check_dataset(name: str, samples: int, tokenizer: str | None) -> tuple[str, str]:
    """Returns (status, message) for one registered dataset; each problem is explained (the record,
    the field, what was expected and an example of a right value). Status: "present" (everything
    there), "MISSING" (json or image folder absent), "BROKEN" (cannot load, bad records or images)
    or "NO-EVAL" (trainable, but an input of its evaluators is missing)."""
    meta = MetadataCatalog.get(name)
    missing = [p for p in _paths_of(meta) if not os.path.exists(p)]
    if missing:
        return "MISSING", "absent: " + ", ".join(missing)
    try:
        records = DatasetCatalog.get(name)
    except Exception as e:  # report every broken dataset, not only the first
        return "BROKEN", f"cannot load: {explain_error(e)}"
    tok = limit = None
    if tokenizer:
        tok, limit = build_tokenizer(tokenizer), max_caption_tokens(tokenizer)
    report = check_records(records, samples, tok, max_caption_tokens=limit)
    summary = f"{report.summary()}, evaluator {meta.evaluator_type!r}"
    if report.problems:
        shown = report.problems[:MAX_LISTED]
        more = (f"\n  ... and {len(report.problems) - MAX_LISTED} more"
                if len(report.problems) > MAX_LISTED else "")
        return "BROKEN", summary + "\n  " + "\n  ".join(shown) + more
    missing_eval = [
        what if path is None else f"{what} ({path})"
        for what, path in evaluation_inputs(name)
        if path is None or not os.path.exists(path)
    ]
    if missing_eval:
        return "NO-EVAL", summary + "; evaluation inputs missing: " + "; ".join(missing_eval)
    return "present", summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="check presence and validate samples")
    parser.add_argument(
        "--only", nargs="*", default=[], help="dataset name prefixes to restrict to"
    )
    parser.add_argument("--samples", type=int, default=20, help="records validated per dataset")
    parser.add_argument(
        "--tokenizer", default=None,
        help="text encoder (HF name/folder): check every caption's length and sampled positive maps"
    )
    parser.add_argument(
        "--add", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="also register your own MDETR json (register_mdetr_json) to list or check it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    register_synthetic(default_synthetic_root(), keep_existing=True)
    for name, json_file, image_root in args.add:
        register_mdetr_json(name, json_file, image_root)

    names = [
        n for n in MDETR_DATASET_NAMES if not args.only or any(n.startswith(p) for p in args.only)
    ]
    print(f"MDETR datasets root: {os.path.abspath(dataset_root())} ($MDETR_DATASETS)")
    if not args.check:
        for name in names:
            meta = MetadataCatalog.get(name)
            print(f"{name:32s} {meta.evaluator_type:14s} {meta.json_file}")
        return 0
    n_ok = 0
    for name in names:
        status, message = check_dataset(name, args.samples, args.tokenizer)
        n_ok += status == "present"
        print(f"[{status:7s}] {name:32s} {message}")
    print(f"{n_ok}/{len(names)} datasets present and valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
