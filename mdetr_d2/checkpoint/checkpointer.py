"""A ``DetectionCheckpointer`` that reads files safely, reads official MDETR files too and prefers
EMA weights, refuses weights whose shapes disagree with the model, writes atomically and resumes
from the newest readable checkpoint."""
from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import IO

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from .official import (
    WEIGHT_KEYS,
    CheckpointError,
    UnsafeCheckpointError,
    convert_official_state_dict,
    is_official_checkpoint,
    load_checkpoint_file,
    select_official_weights,
)

logger = logging.getLogger(__name__)
LAST_CHECKPOINT = "last_checkpoint"


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same folder renamed over it: a reader (or a
    resumed run) finds the previous file or the complete new one, never a partial one, even when
    the process is killed mid-write. A kill leaves only the hidden ``.NAME.tmp`` (overwritten by
    the next write of ``path``)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the new name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible everywhere)
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class MDETRCheckpointer(DetectionCheckpointer):
    """Loads Detectron2 checkpoints and official MDETR checkpoints alike.

    * Every file is read without executing code (:func:`load_checkpoint_file`), whatever its
      extension.
    * ``weights_key`` chooses which weights a *weights-only* load (``load(path,
      checkpointables=[])``, what ``resume_or_load(path, resume=False)`` does) takes: "model_ema"
      (default; the EMA weights the paper's numbers use, from an official file or from a checkpoint
      of our trainer) or "model". A full load for resuming (``checkpointables=None``) always
      restores ``model`` into the model and every checkpointable (``model_ema`` included) from its
      own entry.
    * A checkpoint sharing no key with the model, or holding weights whose shapes disagree with
      the model's, is refused (:class:`CheckpointError` listing the keys and both shapes), except
      for the parameter names matching one of ``skip_mismatched`` (regular expressions,
      ``re.match``), which keep their initialization (fine-tuning into a different head).
    * Checkpoints and ``last_checkpoint`` are written atomically; resuming falls back, with a
      warning, to the newest readable checkpoint of the folder when the tagged one is missing,
      empty or corrupt.
    """

    def __init__(self, model, save_dir: str = "", *, weights_key: str = "model_ema",
                 skip_mismatched: Sequence[str] = (), **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        if weights_key not in WEIGHT_KEYS:
            raise ValueError(f"weights_key must be one of {WEIGHT_KEYS}, got {weights_key!r}")
        self.weights_key = weights_key
        self.skip_mismatched = [re.compile(p) for p in skip_mismatched]
        self._weights_only = False
        self.loaded_file = ""  # the file the last load read (after any resume fallback)
        self._fallbacks: list[str] = []  # older checkpoints to try when resuming

    @classmethod
    def from_config(cls, cfg: CfgNode, model, save_dir: str = "",
                    **checkpointables) -> "MDETRCheckpointer":
        """The checkpointer for ``cfg``: ``MODEL.MDETR.WEIGHTS_KEY`` and
        ``MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS``."""
        return cls(model, save_dir, weights_key=cfg.MODEL.MDETR.WEIGHTS_KEY,
                   skip_mismatched=cfg.MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS, **checkpointables)

    # ----------------------------------------------------------------------------------------------
    # Loading
    def load(self, path: str, checkpointables: list[str] | None = None) -> dict:
        self._weights_only = checkpointables is not None and len(checkpointables) == 0
        return super().load(path, checkpointables=checkpointables)

    def load_weights(self, ckpt: dict, source: str):
        """Weights-only load of a checkpoint already read from ``source`` (large files are read
        once). Returns fvcore's incompatible keys (``missing_keys``, ``unexpected_keys``)."""
        self._weights_only = True
        self.loaded_file = source
        incompatible = self._load_model(self._weights_of(ckpt, source))
        self._log_incompatible_keys(incompatible)
        return incompatible

    def _load_file(self, filename: str) -> dict:
        ckpt = self._read(filename)
        return self._weights_of(ckpt, self.loaded_file)

    def _read(self, filename: str) -> dict:
        """The file's content; when resuming, an unreadable file makes way for the next newest."""
        if not self._fallbacks:
            self.loaded_file = filename
            return load_checkpoint_file(filename)
        candidates = [filename, *self._fallbacks]
        for i, candidate in enumerate(candidates):
            self.loaded_file = candidate
            try:
                return load_checkpoint_file(candidate)
            except UnsafeCheckpointError:
                raise  # a refused file is never skipped silently
            except CheckpointError as e:
                if i + 1 == len(candidates):
                    tried = ", ".join(map(os.path.basename, candidates))
                    raise CheckpointError(f"{self.save_dir}: no readable checkpoint to resume from "
                                          f"(tried {tried}); {e}") from e
                logger.warning("%s\nResuming from the next newest checkpoint, %s, instead.", e,
                               candidates[i + 1])

    def _weights_of(self, ckpt: dict, filename: str) -> dict:
        if is_official_checkpoint(ckpt):
            state = select_official_weights(ckpt, self.weights_key, source=filename)
            logger.info("Loading official MDETR checkpoint %s (%s weights)", filename,
                        "model_ema" if state is ckpt.get("model_ema") else "model")
            return {"model": convert_official_state_dict(state), "__author__": "MDETR official"}
        ema = ckpt.get("model_ema")
        if self._weights_only and self.weights_key == "model_ema" and isinstance(ema, dict):
            logger.info("Loading the EMA weights of %s (model_ema)", filename)
            return {"model": ema}
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
        names = set(checkpoint["model"])
        # Files with Detectron2's `matching_heuristics` have their names matched later, by suffix.
        if not checkpoint.get("matching_heuristics") and model_keys and not model_keys & names:
            raise CheckpointError(
                f"{self.loaded_file}: the checkpoint shares no parameter name with this MDETR model: "
                f"it is not an MDETR checkpoint (first keys: {sorted(names)[:5]})"
            )
        incompatible = super()._load_model(checkpoint)
        refused = [m for m in incompatible.incorrect_shapes
                   if not any(p.match(m[0]) for p in self.skip_mismatched)]
        if refused:
            listing = "\n".join(f"  {k}: {tuple(c)} in the checkpoint, {tuple(m)} in the model"
                                for k, c, m in refused)
            raise CheckpointError(
                f"{self.loaded_file}: {len(refused)} weight(s) have shapes that disagree with the "
                f"model (a config that does not match the checkpoint?):\n{listing}\nTo fine-tune "
                "into a different head, name what may keep its initialization in "
                "MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS."
            )
        for k, ckpt_shape, model_shape in incompatible.incorrect_shapes:
            logger.warning("Not loading %s (%s in the checkpoint, %s in the model): allowed by "
                           "MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS; it keeps its initialization.",
                           k, tuple(ckpt_shape), tuple(model_shape))
        return incompatible._replace(incorrect_shapes=[])

    # ----------------------------------------------------------------------------------------------
    # Resuming
    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        candidates = self._resume_candidates()
        self._fallbacks = candidates[1:]
        try:
            return self.load(candidates[0])
        finally:
            self._fallbacks = []

    def get_checkpoint_file(self) -> str:
        """The checkpoint ``last_checkpoint`` names (the folder itself when it names nothing)."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT), "rb") as f:
                name = f.read().decode("utf-8", errors="replace").strip()
        except OSError:
            return ""
        return os.path.join(self.save_dir, name)

    def _resume_candidates(self) -> list[str]:
        """The tagged checkpoint first (when it exists), then every other ``.pth`` of the folder,
        newest first."""
        tagged = self.get_checkpoint_file()
        others = sorted((f for f in self.get_all_checkpoint_files() if f != tagged),
                        key=lambda f: (os.path.getmtime(f), f), reverse=True)
        if os.path.isfile(tagged) and os.path.getsize(tagged) > 0:
            return [tagged, *others]
        tag_file = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not others:
            name = os.path.basename(tagged)
            raise CheckpointError(f"{tag_file} names {name!r}, which is missing or empty, and "
                                  f"{self.save_dir} holds no other checkpoint")
        logger.warning("%s names %r, which is missing or empty; resuming from the newest "
                       "checkpoint, %s", tag_file, os.path.basename(tagged), others[0])
        return others

    # ----------------------------------------------------------------------------------------------
    # Saving
    def save(self, name: str, **kwargs) -> None:
        """fvcore's ``save`` (same file and content), written atomically."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT),
                     lambda f: f.write(last_filename_basename.encode()))
