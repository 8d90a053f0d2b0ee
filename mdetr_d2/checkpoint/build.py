"""Build a ready model straight from an official MDETR checkpoint file (its ``args`` give the config)."""
from __future__ import annotations

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager

from ..config import add_mdetr_config
from .checkpointer import MDETRCheckpointer
from .official import CheckpointError, is_official_checkpoint, load_checkpoint_file, official_args_to_cfg


def official_cfg_of(ckpt: dict, path: str, text_encoder: str | None = None,
                    device: str | None = None) -> CfgNode:
    """A config matching an official checkpoint already read from ``path`` (model keys from its
    ``args``; ``MODEL.WEIGHTS`` = ``path``).

    Args:
        path: the checkpoint file, or a released checkpoint's name (``mdetr://refcoco_resnet101``).
        text_encoder: HF name or local folder replacing the checkpoint's ``text_encoder_type``.
        device: defaults to "cuda" when available, else "cpu".
    """
    if not is_official_checkpoint(ckpt) or "args" not in ckpt:
        raise CheckpointError(f"{path}: not an official MDETR checkpoint with its training args")
    cfg = get_cfg()
    add_mdetr_config(cfg)
    official_args_to_cfg(cfg, ckpt["args"], text_encoder=text_encoder)
    cfg.MODEL.WEIGHTS = path
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return cfg


def official_cfg(path: str, text_encoder: str | None = None, device: str | None = None) -> CfgNode:
    """:func:`official_cfg_of` for a file or ``mdetr://<name>``. Only its metadata is read: the
    tensors of a torch zip file are memory-mapped, not loaded (a 3 GB release is read once, when the
    weights load)."""
    ckpt = load_checkpoint_file(PathManager.get_local_path(path), mmap=True)
    return official_cfg_of(ckpt, path, text_encoder, device)


def build_official_model(path: str, text_encoder: str | None = None, weights_key: str = "model_ema",
                         device: str | None = None) -> torch.nn.Module:
    """The MDETR model of an official checkpoint (a file or ``mdetr://<name>``) with its
    ``weights_key`` weights, in eval mode (the file is read once)."""
    ckpt = load_checkpoint_file(PathManager.get_local_path(path))
    cfg = official_cfg_of(ckpt, path, text_encoder, device)
    cfg.MODEL.MDETR.WEIGHTS_KEY = weights_key
    model = build_model(cfg)
    MDETRCheckpointer.from_config(cfg, model).load_weights(ckpt, path)
    return model.eval()
