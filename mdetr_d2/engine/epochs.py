"""Schedules stated in epochs, resolved to iterations when training starts (reference §8.1).

The official recipes count epochs; Detectron2 counts iterations. A recipe states ``SOLVER.EPOCHS``,
``SOLVER.LR_DROP_EPOCHS`` (and the period keys) and leaves the iteration keys at ``-1``; the trainer
then computes them from the registered training sets' length ``D``, the number of processes ``W``
and the images per process ``b = SOLVER.IMS_PER_BATCH / W``, with the official per-process sampler
arithmetic: ``DistributedSampler`` pads the set to a multiple of ``W`` and ``BatchSampler`` drops
the last incomplete batch, so

    iters_per_epoch = floor(ceil(D / W) / b).

With ``SOLVER.EPOCH_CHUNKS = K > 0`` (official ``--epoch_chunks``) the set is cut into ``K``
contiguous chunks of ``ceil(D / K)`` datapoints (``torch.chunk``) and every "epoch" iterates one
chunk: epochs, the LR drop and the periods then count chunk-epochs, and ``D`` above is the chunk's
size. The LR warm-up stays ``WARMUP_FRACTION x MAX_ITER`` (official: 1 % of
``len(loader) x epochs``), and the LR drop happens every ``LR_DROP_EPOCHS`` epochs, as the official
``0.1 ** (epoch // lr_drop)``.

An iteration key set to a value ``>= 0`` is used as given (explicit iterations win).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Mapping

from detectron2.config import CfgNode

logger = logging.getLogger(__name__)

__all__ = [
    "EPOCH_KEYS",
    "ResolvedSchedule",
    "iterations_per_epoch",
    "resolve_epoch_schedule",
    "resolve_iterations",
    "schedule_values",
]

# Iteration key -> the epoch key it is derived from when left at -1.
EPOCH_KEYS = {
    "SOLVER.MAX_ITER": "SOLVER.EPOCHS",
    "SOLVER.LR_DROP": "SOLVER.LR_DROP_EPOCHS",
    "SOLVER.LR_DROP_PERIOD": "SOLVER.LR_DROP_PERIOD_EPOCHS",
    "SOLVER.CHECKPOINT_PERIOD": "SOLVER.CHECKPOINT_PERIOD_EPOCHS",
    "TEST.EVAL_PERIOD": "TEST.EVAL_PERIOD_EPOCHS",
}
DERIVED = -1  # the value of an iteration key that is to be derived from its epoch key


def _get(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def iterations_per_epoch(
    num_datapoints: int, world_size: int, images_per_batch: int, epoch_chunks: int = 0
) -> int:
    """Optimizer steps of one (chunk-)epoch of every process, as the official sampler gives them.

    Args:
        num_datapoints: ``D``, the length of the (concatenated) training set.
        world_size: ``W``, the number of training processes.
        images_per_batch: the global batch ``SOLVER.IMS_PER_BATCH`` (``W x b``).
        epoch_chunks: ``K`` of the official ``--epoch_chunks`` (0: whole-set epochs).

    Returns:
        ``floor(ceil(D' / W) / b)`` with ``D' = D`` or ``ceil(D / K)`` (one chunk).

    Raises:
        ValueError: the batch does not split over the processes, or an epoch has no full batch.
    """
    if num_datapoints <= 0:
        raise ValueError(f"the training set is empty (D = {num_datapoints})")
    if world_size <= 0 or images_per_batch % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({images_per_batch}) must be a multiple of the number of "
            f"processes ({world_size})"
        )
    per_process = images_per_batch // world_size
    size = math.ceil(num_datapoints / epoch_chunks) if epoch_chunks > 0 else num_datapoints
    iters = math.ceil(size / world_size) // per_process
    if iters == 0:
        what = f"a chunk of {size}" if epoch_chunks > 0 else f"{size}"
        raise ValueError(
            f"{what} training datapoints give no full batch of {per_process} images on each of "
            f"{world_size} processes: lower SOLVER.IMS_PER_BATCH or SOLVER.EPOCH_CHUNKS"
        )
    return iters


@dataclass(frozen=True)
class ResolvedSchedule:
    """The iteration schedule of one training run and where each value came from."""

    num_datapoints: int
    world_size: int
    images_per_process: int
    epoch_chunks: int
    iters_per_epoch: int | None  # None when every key was given in iterations
    values: dict[str, int]  # iteration key -> value
    sources: dict[str, str]  # iteration key -> "N epochs" or "explicit"

    def apply(self, cfg: CfgNode) -> CfgNode:
        """A copy of ``cfg`` with the resolved iteration keys (frozen if ``cfg`` was)."""
        out = cfg.clone()
        out.defrost()
        for key, value in self.values.items():
            section, name = key.split(".")
            out[section][name] = value
        if cfg.is_frozen():
            out.freeze()
        return out

    def describe(self) -> str:
        """One line per key, e.g. ``SOLVER.MAX_ITER = 75390 (5 epochs)``."""
        chunks = f", {self.epoch_chunks} chunks" if self.epoch_chunks > 0 else ""
        head = (
            f"D = {self.num_datapoints} training datapoints, {self.world_size} process(es) x "
            f"{self.images_per_process} images{chunks}"
        )
        if self.iters_per_epoch is not None:
            head += f": {self.iters_per_epoch} iterations per epoch"
        lines = [head] + [f"  {k} = {v} ({self.sources[k]})" for k, v in self.values.items()]
        return "\n".join(lines)


def schedule_values(cfg: CfgNode) -> tuple[dict[str, int], dict[str, float]]:
    """The iteration keys and their epoch keys of a yacs config, by iteration key."""
    iterations = {key: int(_get(cfg, key)) for key in EPOCH_KEYS}
    epochs = {key: _get(cfg, epoch_key) for key, epoch_key in EPOCH_KEYS.items()}
    return iterations, epochs


def resolve_epoch_schedule(cfg: CfgNode, num_datapoints: int, world_size: int) -> ResolvedSchedule:
    """Resolve the iteration keys of ``cfg`` left at ``-1`` from their epoch keys (module
    docstring); see :func:`resolve_iterations`."""
    iterations, epochs = schedule_values(cfg)
    return resolve_iterations(
        iterations, epochs, num_datapoints=num_datapoints, world_size=world_size,
        images_per_batch=int(cfg.SOLVER.IMS_PER_BATCH), epoch_chunks=int(cfg.SOLVER.EPOCH_CHUNKS),
        schedule=cfg.SOLVER.LR_SCHEDULER_NAME,
    )


def resolve_iterations(
    iterations: Mapping[str, int],
    epochs: Mapping[str, float],
    *,
    num_datapoints: int,
    world_size: int,
    images_per_batch: int,
    epoch_chunks: int = 0,
    schedule: str = "linear_with_warmup",
) -> ResolvedSchedule:
    """Resolve the iteration values left at ``-1`` from their epoch values.

    Args:
        iterations: value of each key of :data:`EPOCH_KEYS` (``SOLVER.MAX_ITER``, ...); -1 = derive.
        epochs: the matching epoch value, by the same (iteration) keys.
        num_datapoints: length of the concatenated training sets.
        world_size: number of training processes.
        images_per_batch: the global batch.
        epoch_chunks: official ``--epoch_chunks`` (0: none).
        schedule: the LR schedule (``LR_DROP_PERIOD`` is only used by "multistep").

    Raises:
        ValueError: ``SOLVER.MAX_ITER`` is -1 without ``SOLVER.EPOCHS``, a derived checkpoint period
            is 0, or the batch does not fit (see :func:`iterations_per_epoch`).
    """
    ipe = None
    values, sources = {}, {}
    for key, epoch_key in EPOCH_KEYS.items():
        value, count = int(iterations[key]), epochs[key]
        if value != DERIVED:
            if value < 0:
                raise ValueError(f"{key} = {value}: use -1 (from {epoch_key}) or a value >= 0")
            values[key], sources[key] = value, "explicit"
            continue
        if key == "SOLVER.LR_DROP_PERIOD" and schedule != "multistep":
            values[key], sources[key] = 0, f"unused by {schedule!r}"
            continue
        if key == "SOLVER.MAX_ITER" and count <= 0:
            raise ValueError("SOLVER.MAX_ITER is -1 (from epochs) but SOLVER.EPOCHS is not set")
        if ipe is None:
            ipe = iterations_per_epoch(num_datapoints, world_size, images_per_batch, epoch_chunks)
        values[key] = int(count) * ipe
        sources[key] = f"{count} epochs"
        if key == "SOLVER.CHECKPOINT_PERIOD" and values[key] <= 0:
            raise ValueError(f"{key} is -1 (from epochs) but {epoch_key} is {count}")
    return ResolvedSchedule(
        num_datapoints=num_datapoints,
        world_size=world_size,
        images_per_process=images_per_batch // world_size if world_size else 0,
        epoch_chunks=epoch_chunks,
        iters_per_epoch=ipe,
        values=values,
        sources=sources,
    )
