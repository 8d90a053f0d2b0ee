"""Reading checkpoint files without running their code, and the official MDETR layout
(``{"model", "model_ema", "args", "epoch"[, "optimizer"]}``).

No file we load can execute code, whatever its extension and whatever the environment says
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only affects ``torch.load`` calls that do not pass
``weights_only``; ours always pass ``weights_only=True``):

* torch files (``.pth``, ``.pt``, ``.bin``, anything not ``.pkl``) are read with
  ``torch.load(weights_only=True)``; the only class allowed besides tensors and containers is
  ``argparse.Namespace`` (the official ``args``), registered once for the process
  (:data:`SAFE_GLOBALS`), so Detectron2's own ``DetectionCheckpointer`` reads official files too;
* Detectron2-format ``.pkl`` weights (the model zoo's pickled dicts of numpy arrays) go through a
  restricted unpickler that admits numpy arrays, numpy scalars and dtypes and plain containers only.

Anything else is refused with :class:`UnsafeCheckpointError` naming the file and the class.
Keys are renamed to this package's module layout by :mod:`mdetr_d2.modeling.official_names`.
"""
from __future__ import annotations

import argparse
import codecs
import collections
import contextlib
import logging
import pickle
import re
import zipfile

import numpy as np
import torch
from detectron2.config import CfgNode

from ..modeling.official_names import has_official_names, official_to_our_name

logger = logging.getLogger(__name__)

WEIGHT_KEYS = ("model_ema", "model")
# Classes a torch checkpoint may hold besides tensors and containers: the official `args`.
SAFE_GLOBALS = [argparse.Namespace]
torch.serialization.add_safe_globals(SAFE_GLOBALS)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read or is not what it claims to be."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that holds pickled objects outside the allow-list (it could run code)."""


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """What numpy arrays, scalars and dtypes pickle to (numpy 1.x names and numpy 2's ``_core``)."""
    core = getattr(np, "_core", None) or np.core
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("collections", "OrderedDict"): collections.OrderedDict,
               # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
               ("_codecs", "encode"): codecs.encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


_PKL_GLOBALS = _numpy_pickle_globals()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _PKL_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed") from None


def _read_detectron2_pkl(path: str) -> dict:
    """A Detectron2 ``.pkl`` (model zoo or Caffe2 layout), as Detectron2 interprets it."""
    with open(path, "rb") as f:
        data = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    if not isinstance(data, dict):
        return data
    if "model" in data and "__author__" in data:  # Detectron2 model zoo layout
        return data
    # Caffe2 / Detectron1 layout: a (possibly "blobs"-wrapped) dict of arrays, names to be matched.
    data = data.get("blobs", data)
    data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}


def _refused_globals(path: str, error: Exception) -> str:
    """The classes/functions of a refused file, e.g. "builtins.exec" (read without unpickling)."""
    names = []
    if zipfile.is_zipfile(path):
        with contextlib.suppress(Exception):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    if not names:  # our numpy-only unpickler and torch's own message name the first one
        names = re.findall(r"(?:GLOBAL )?([\w.]+) (?:is|was) not (?:an )?allowed", str(error))
    return ", ".join(names) or f"objects ({error})"


def load_checkpoint_file(path: str, *, mmap: bool = False) -> dict:
    """Read a checkpoint without executing code (see the module docstring); clear errors.

    Args:
        mmap: map the tensors of a torch zip file instead of reading them: cheap when only the
            metadata (e.g. an official file's ``args``) is needed.
    """
    try:
        if path.endswith(".pkl") and not zipfile.is_zipfile(path):
            obj = _read_detectron2_pkl(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True,
                             mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load: it holds pickled {_refused_globals(path, e)}, outside the "
            "allow-list (tensors, containers and argparse.Namespace; numpy arrays in .pkl "
            "weights): loading it could run code"
        ) from e
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such checkpoint file") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): "
                              f"{e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def is_official_checkpoint(ckpt: dict) -> bool:
    """True for the official training/release layout: ``model`` plus ``args`` or ``model_ema``."""
    model = ckpt.get("model")
    if not isinstance(model, dict) or not ("args" in ckpt or "model_ema" in ckpt):
        return False
    return has_official_names(model)


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
        ours = official_to_our_name(key)
        if ours is not None:
            converted[ours] = value.clone()
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
    """Set the model keys and the LRs of ``cfg`` (made with :func:`add_mdetr_config`) from an
    official ``args``.

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
    cfg.SOLVER.BASE_LR = a.get("lr", cfg.SOLVER.BASE_LR)
    cfg.SOLVER.BACKBONE_LR = a.get("lr_backbone", cfg.SOLVER.BACKBONE_LR)
    cfg.SOLVER.TEXT_ENCODER_LR = a.get("text_encoder_lr", cfg.SOLVER.TEXT_ENCODER_LR)
    # The checkpoint carries the text encoder's weights: only its config and tokenizer are needed.
    m.TEXT_ENCODER.PRETRAINED = False
    return cfg
