"""Reading the official MDETR checkpoints (``{"model", "model_ema", "args", "epoch"[, "optimizer"]}``).

Loading never executes pickled code: files are read with ``torch.load(weights_only=True)`` and the only
extra class allowed is ``argparse.Namespace`` (the official ``args``). Keys are renamed to this package's
module layout (reference §2).
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re

import torch
from detectron2.config import CfgNode

logger = logging.getLogger(__name__)

# (official key pattern, our replacement), applied in order after the segmentation prefix is removed.
_KEY_RENAMES = (
    (re.compile(r"^backbone\.0\.body\."), "backbone.body."),
    (re.compile(r"^transformer\.text_encoder\."), "text_encoder.body."),
    (re.compile(r"^transformer\.resizer\."), "text_encoder.resizer."),
    (re.compile(r"^transformer\.CLS\."), "cls_token."),
    (re.compile(r"^(answer_\w+_head\.)"), r"qa_head.\1"),
)
# Persistent in transformers 4.5.1 (what the released files were saved with), gone from current RoBERTa.
_STALE_KEY = re.compile(r"(^|\.)text_encoder\.embeddings\.position_ids$")
WEIGHT_KEYS = ("model_ema", "model")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or is not what it claims to be."""


def load_checkpoint_file(path: str) -> dict:
    """``torch.load`` a file with weights-only unpickling plus ``argparse.Namespace``; clear errors."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to load: it holds pickled objects outside the allow-list "
            f"(tensors, containers, argparse.Namespace). Details: {e}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def is_official_checkpoint(ckpt: dict) -> bool:
    """True for the official training/release layout: ``model`` plus ``args`` or ``model_ema``."""
    model = ckpt.get("model")
    if not isinstance(model, dict) or not ("args" in ckpt or "model_ema" in ckpt):
        return False
    # Official names (our own checkpoints use `backbone.body.` and `text_encoder.body.`).
    return any(k.startswith(("backbone.0.", "transformer.text_encoder.", "detr.")) for k in model)


def select_official_weights(ckpt: dict, key: str = "model_ema", source: str = "checkpoint") -> dict:
    """The state dict under ``key`` ("model_ema" or "model"); falls back to ``model`` when a file has
    no EMA weights (``BEST_checkpoint.pth`` files, or ``model_ema: None``)."""
    if key not in WEIGHT_KEYS:
        raise ValueError(f"weights key must be one of {WEIGHT_KEYS}, got {key!r}")
    state = ckpt.get(key)
    if state is None:
        if key == "model_ema":
            logger.warning("%s has no EMA weights; loading 'model' instead", source)
            state = ckpt["model"]
        else:
            raise CheckpointError(f"{source} has no {key!r} weights")
    return state


def convert_official_state_dict(state: dict) -> dict:
    """Rename official keys to ours, drop the stale ``position_ids`` buffer. Tensors are cloned (the
    official files share storage between ``model`` and ``model_ema``)."""
    converted = {}
    for key, value in state.items():
        key = key.removeprefix("detr.")  # segmentation models wrap the detector as `detr`
        if _STALE_KEY.search(key):
            continue
        for pattern, replacement in _KEY_RENAMES:
            key = pattern.sub(replacement, key)
        converted[key] = value.clone()
    return converted


def _backbone_cfg(cfg: CfgNode, name: str) -> None:
    resnet = re.fullmatch(r"resnet(18|34|50|101)", name)
    effnet = re.fullmatch(r"timm_tf_efficientnet_(b\d)(_ns)?", name)
    if resnet:
        cfg.MODEL.BACKBONE.NAME = "build_mdetr_resnet_backbone"
        cfg.MODEL.RESNETS.DEPTH = int(resnet.group(1))
    elif effnet:
        cfg.MODEL.BACKBONE.NAME = "build_mdetr_efficientnet_backbone"
        cfg.MODEL.MDETR.EFFICIENTNET_VARIANT = effnet.group(1)
    else:
        raise ValueError(f"official backbone {name!r} is not supported (resnet18/34/50/101, "
                         "timm_tf_efficientnet_b*_ns)")


def official_args_to_cfg(cfg: CfgNode, args: argparse.Namespace | dict,
                         text_encoder: str | None = None) -> CfgNode:
    """Set the model keys of ``cfg`` (made with :func:`add_mdetr_config`) from an official ``args``.

    Args:
        text_encoder: HF name or local folder to use instead of ``args.text_encoder_type``.
    """
    a = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    m = cfg.MODEL.MDETR
    _backbone_cfg(cfg, a["backbone"])
    if a.get("dilation"):
        raise ValueError("official checkpoints trained with --dilation are not supported")
    m.HIDDEN_DIM = a["hidden_dim"]
    m.NHEADS = a["nheads"]
    m.ENC_LAYERS = a["enc_layers"]
    m.DEC_LAYERS = a["dec_layers"]
    m.DIM_FEEDFORWARD = a["dim_feedforward"]
    m.DROPOUT = a["dropout"]
    m.NUM_QUERIES = a["num_queries"]
    m.AUX_LOSS = bool(a["aux_loss"])
    m.TEXT_ENCODER.NAME = text_encoder or a["text_encoder_type"]
    m.TEXT_ENCODER.FREEZE = bool(a.get("freeze_text_encoder", False))
    m.CONTRASTIVE_ALIGN_LOSS = bool(a["contrastive_align_loss"])
    m.CONTRASTIVE_HDIM = a["contrastive_loss_hdim"]
    m.TEMPERATURE = a["temperature_NCE"]
    m.CONTRASTIVE_LOSS = bool(a.get("contrastive_loss", False))
    m.MASKS = bool(a.get("masks", False))
    m.PREDICT_FINAL = bool(a.get("predict_final", False))
    if a.get("do_qa"):
        datasets = " ".join(a.get("combine_datasets", []))
        if not a.get("split_qa_heads"):
            m.QA_HEAD = "gqa_single"
        else:
            m.QA_HEAD = "clevr" if "clevr" in datasets else "gqa"
    else:
        m.QA_HEAD = "none"
    for ours, theirs in (("CE_LOSS_COEF", "ce_loss_coef"), ("BBOX_LOSS_COEF", "bbox_loss_coef"),
                         ("GIOU_LOSS_COEF", "giou_loss_coef"), ("MASK_LOSS_COEF", "mask_loss_coef"),
                         ("DICE_LOSS_COEF", "dice_loss_coef"), ("QA_LOSS_COEF", "qa_loss_coef"),
                         ("EOS_COEF", "eos_coef"), ("SET_COST_CLASS", "set_cost_class"),
                         ("SET_COST_BBOX", "set_cost_bbox"), ("SET_COST_GIOU", "set_cost_giou"),
                         ("CONTRASTIVE_ALIGN_LOSS_COEF", "contrastive_align_loss_coef"),
                         ("CONTRASTIVE_LOSS_COEF", "contrastive_loss_coef")):
        if theirs in a:
            setattr(m, ours, float(a[theirs]))
    m.LR_BACKBONE = a.get("lr_backbone", m.LR_BACKBONE)
    m.LR_TEXT_ENCODER = a.get("text_encoder_lr", m.LR_TEXT_ENCODER)
    cfg.SOLVER.BASE_LR = a.get("lr", cfg.SOLVER.BASE_LR)
    # The checkpoint carries the text encoder's weights: only its config and tokenizer are needed.
    m.TEXT_ENCODER.PRETRAINED = False
    return cfg
