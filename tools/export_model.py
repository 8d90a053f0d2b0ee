#!/usr/bin/env python
"""Export MDETR for deployment: TorchScript or ONNX graphs, the tokenizer and a manifest.

    python tools/export_model.py --config-file configs/mdetr_refcoco.yaml --format onnx \\
        --export-method tracing --output export/refcoco MODEL.WEIGHTS mdetr://refcoco_resnet101

    python tools/export_model.py --official checkpoint.pth --format torchscript --output export/x

Detectron2's ``tools/deploy/export_model.py`` conventions (``--format``, ``--export-method
tracing``, ``--output``, ``--sample-image``, config overrides at the end). The folder holds three
graphs (text encoder; image encoder; grounding: cross-encoder, decoder and heads), ``tokenizer/``,
``config.yaml`` and ``manifest.json``; ``mdetr_d2.export.ExportedMDETR(folder)`` runs it with
onnxruntime or TorchScript and returns the eager model's ``Instances`` (README "Export").

ResNet backbones are exported on the fast path (frozen BN folded into the convolutions,
channels-last; ``MODEL.MDETR.BACKBONE_FAST_PATH``) unless ``--exact-backbone``. Every export is
checked against the eager model (of the same backbone mode) on image sizes and text lengths
other than the traced ones; the differences are printed and kept in the manifest.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

import torch
from detectron2.config import get_cfg
from detectron2.data import detection_utils
from detectron2.data import transforms as T
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from mdetr_d2 import add_mdetr_config
from mdetr_d2.checkpoint import official_cfg
from mdetr_d2.data.transforms import build_augmentation_from_config
from mdetr_d2.export import ExportError
from mdetr_d2.export.exporter import FORMATS, check_exportable, export_mdetr, load_export_weights
from mdetr_d2.modeling.meta_arch import MDETR

logger = logging.getLogger("mdetr_d2.export_model")


def setup_cfg(args):
    if args.official:
        cfg = official_cfg(args.official, text_encoder=args.text_encoder, device="cpu")
    else:
        cfg = get_cfg()
        add_mdetr_config(cfg)
        cfg.merge_from_file(args.config_file)
        if args.text_encoder:
            cfg.MODEL.MDETR.TEXT_ENCODER.NAME = args.text_encoder
    # The weights come from MODEL.WEIGHTS: no need for the text encoder's pretrained ones.
    cfg.MODEL.MDETR.TEXT_ENCODER.PRETRAINED = False
    cfg.MODEL.MDETR.BACKBONE_FAST_PATH = not args.exact_backbone
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"  # traced graphs keep the device they were traced on
    cfg.freeze()
    return cfg


def build_export_model(cfg) -> MDETR:
    """The model of ``cfg`` in eval mode with every weight from ``cfg.MODEL.WEIGHTS``.

    Raises:
        ExportError: a meta-architecture other than MDETR (checked before building it).
        CheckpointError: weights missing, unreadable or of another model.
    """
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    if not (isinstance(arch, type) and issubclass(arch, MDETR)):
        raise ExportError(f"cannot export MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: "
                          "the export supports the MDETR meta-architecture (or a subclass)")
    model = build_model(cfg).eval()
    check_exportable(model)
    load_export_weights(cfg, model)
    return model


def sample_image(path: str, cfg) -> torch.Tensor:
    """An image file as the model's input: the evaluation resize, C×H×W float pixels."""
    image = detection_utils.read_image(path, format=cfg.INPUT.FORMAT)
    aug_input = T.AugInput(image)
    T.AugmentationList(build_augmentation_from_config(cfg, is_train=False))(aug_input)
    return torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", metavar="FILE", help="mdetr_d2 YAML config")
    parser.add_argument("--official", help="official MDETR checkpoint file or released name "
                        "(mdetr://refcoco_resnet101); the config comes from its args")
    parser.add_argument("--text-encoder", help="HF name or local folder of the text encoder")
    parser.add_argument("--format", choices=FORMATS, default="torchscript", help="output format")
    parser.add_argument("--export-method", choices=["tracing"], default="tracing",
                        help="how graphs are captured (tracing only: the Hugging Face text "
                        "encoder and timm backbones are not scriptable)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sample-image", help="image to trace on (default: synthetic images)")
    parser.add_argument("--sample-caption", help="caption to trace on")
    parser.add_argument("--exact-backbone", action="store_true",
                        help="export the official ResNet arithmetic instead of the fast path")
    parser.add_argument("--dump-ir", action="store_true",
                        help="torchscript: also write each graph's code and IR (<graph>_ir/)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    if bool(args.config_file) == bool(args.official):
        parser.error("give either --config-file or --official")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    cfg = setup_cfg(args)
    model = build_export_model(cfg)
    image = sample_image(args.sample_image, cfg) if args.sample_image else None
    manifest = export_mdetr(model, args.output, args.format, sample_image=image,
                            sample_caption=args.sample_caption, cfg=cfg, dump_ir=args.dump_ir)
    logger.info("exported %s to %s; max |exported - eager| on new image sizes: %s", args.format,
                args.output, json.dumps(manifest["check"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
