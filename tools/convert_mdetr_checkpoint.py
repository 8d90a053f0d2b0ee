#!/usr/bin/env python
"""Convert an official MDETR checkpoint into a Detectron2 checkpoint of mdetr_d2 (once, offline).

    python tools/convert_mdetr_checkpoint.py refcoco_resnet101_checkpoint.pth model_refcoco_r101.pth \
        [--weights model_ema|model] [--config-out refcoco_r101.yaml] [--text-encoder roberta-base]

The output loads with a plain ``DetectionCheckpointer`` (``MODEL.WEIGHTS=model_refcoco_r101.pth``); the
optional YAML holds the model keys that match the checkpoint's training arguments. The input is read
once and never executes pickled code (see ``mdetr_d2.checkpoint.load_checkpoint_file``).
"""
import argparse
import logging
import sys

import torch
from detectron2.utils.file_io import PathManager

from mdetr_d2.checkpoint import (
    CheckpointError,
    convert_official_state_dict,
    is_official_checkpoint,
    load_checkpoint_file,
    official_cfg_of,
    select_official_weights,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="official checkpoint (.pth) or released name (mdetr://NAME)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pth)")
    parser.add_argument("--weights", choices=("model_ema", "model"), default="model_ema",
                        help="which weights to convert (default: model_ema, what the paper evaluates)")
    parser.add_argument("--config-out", help="also write a YAML config matching the checkpoint")
    parser.add_argument("--text-encoder", help="HF name or local folder replacing args.text_encoder_type")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ckpt = load_checkpoint_file(PathManager.get_local_path(args.input))
        if not is_official_checkpoint(ckpt):
            raise CheckpointError(f"{args.input}: not an official MDETR checkpoint "
                                  "(expected 'model' with MDETR keys and 'args' or 'model_ema')")
        state = convert_official_state_dict(select_official_weights(ckpt, args.weights, args.input))
        if args.config_out:
            cfg = official_cfg_of(ckpt, args.input, text_encoder=args.text_encoder, device="cpu")
            cfg.MODEL.WEIGHTS = args.output
            with open(args.config_out, "w") as f:
                f.write(cfg.dump())
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    torch.save({"model": state, "__author__": f"MDETR official ({args.weights})"}, args.output)
    logging.info("wrote %s (%d tensors, %s weights)", args.output, len(state), args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
