#!/usr/bin/env python
"""Generate the synthetic grounding world (images, MDETR-format json, local text encoder).

    python tools/make_synthetic.py                       # datasets/synthetic, 2000/200/200 scenes
    python tools/make_synthetic.py --root /tmp/syn --num-train 100 --num-val 10 --num-test 10

Re-running with the same arguments does nothing (see ``manifest.json``); ``--force`` regenerates.
"""
import argparse
import json
import logging
import os
import time

from mdetr_synthetic import default_synthetic_root, generate_synthetic_dataset


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=default_synthetic_root(),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2000, help="train scenes (images)")
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--refexp-per-image", type=int, default=2)
    parser.add_argument("--flickr-per-image", type=int, default=1)
    parser.add_argument("--qa-per-image", type=int, default=2)
    parser.add_argument("--no-masks", action="store_true", help="do not write polygons")
    parser.add_argument("--no-text-encoder", action="store_true", help="skip text_encoder/")
    parser.add_argument("--text-hidden-size", type=int, default=64)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    outputs = generate_synthetic_dataset(
        args.root, seed=args.seed, num_train=args.num_train, num_val=args.num_val,
        num_test=args.num_test, refexp_per_image=args.refexp_per_image,
        flickr_per_image=args.flickr_per_image, qa_per_image=args.qa_per_image,
        masks=not args.no_masks, text_encoder=not args.no_text_encoder,
        text_hidden_size=args.text_hidden_size, text_layers=args.text_layers, force=args.force,
    )
    with open(outputs["manifest"]) as f:
        counts = json.load(f)["counts"]
    elapsed = time.perf_counter() - start
    print(f"synthetic dataset in {os.path.abspath(args.root)} ({elapsed:.1f} s)")
    for key, path in outputs.items():
        extra = counts.get(key)
        detail = f"  ({extra['datapoints']} datapoints, {extra['boxes']} boxes)" if extra else ""
        print(f"  {key:24s} {path}{detail}")
    if "text_encoder" in outputs:
        print(f"use it with MODEL.MDETR.TEXT_ENCODER.NAME {outputs['text_encoder']}")


if __name__ == "__main__":
    main()
