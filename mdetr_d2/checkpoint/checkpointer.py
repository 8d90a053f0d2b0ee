"""A ``DetectionCheckpointer`` that also reads official MDETR files and prefers EMA weights."""
from __future__ import annotations

import logging

from detectron2.checkpoint import DetectionCheckpointer

from .official import (
    WEIGHT_KEYS,
    CheckpointError,
    convert_official_state_dict,
    is_official_checkpoint,
    load_checkpoint_file,
    select_official_weights,
)

logger = logging.getLogger(__name__)


class MDETRCheckpointer(DetectionCheckpointer):
    """Loads Detectron2 checkpoints and official MDETR checkpoints alike.

    ``weights_key`` chooses which weights a *weights-only* load (``load(path, checkpointables=[])``, what
    ``resume_or_load(path, resume=False)`` does) takes: "model_ema" (default; the EMA weights the paper's
    numbers use, from an official file or from a checkpoint of our trainer) or "model". A full load for
    resuming (``checkpointables=None``) always restores ``model`` into the model and every
    checkpointable (``model_ema`` included) from its own entry.
    """

    def __init__(self, model, save_dir: str = "", *, weights_key: str = "model_ema", **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        if weights_key not in WEIGHT_KEYS:
            raise ValueError(f"weights_key must be one of {WEIGHT_KEYS}, got {weights_key!r}")
        self.weights_key = weights_key
        self._weights_only = False

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict:
        self._weights_only = checkpointables is not None and len(checkpointables) == 0
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename: str) -> dict:
        if not filename.endswith((".pth", ".pt")):
            return super()._load_file(filename)
        ckpt = load_checkpoint_file(filename)
        if is_official_checkpoint(ckpt):
            state = select_official_weights(ckpt, self.weights_key, source=filename)
            logger.info("Loading official MDETR checkpoint %s (%s weights)", filename,
                        "model_ema" if state is ckpt.get("model_ema") else "model")
            return {"model": convert_official_state_dict(state), "__author__": "MDETR official"}
        if self._weights_only and self.weights_key == "model_ema" and isinstance(ckpt.get("model_ema"), dict):
            logger.info("Loading the EMA weights of %s (model_ema)", filename)
            return {"model": ckpt["model_ema"]}
        if self._weights_only:
            why = (
                "MODEL.MDETR.WEIGHTS_KEY is 'model'"
                if self.weights_key == "model"
                else "no model_ema in the file"
            )
            logger.info("Loading the model weights of %s (model; %s)", filename, why)
        return ckpt if "model" in ckpt else {"model": ckpt}

    def _load_model(self, checkpoint: dict):
        model_keys = set(self.model.state_dict())
        if model_keys and not model_keys & set(checkpoint["model"]):
            raise CheckpointError(
                "the checkpoint shares no parameter name with this MDETR model: it is not an MDETR "
                f"checkpoint (first keys: {sorted(checkpoint['model'])[:5]})"
            )
        return super()._load_model(checkpoint)
