"""MDETR's LR schedules as fvcore ``ParamScheduler`` multipliers (reference §8.1).

Each optimizer group gets its own multiplier (the text encoder follows a different rule from the
backbone and the transformer in the default schedule), applied by :class:`GroupLRMultiplier`, a
Detectron2 ``LRMultiplier`` whose state (``base_lrs``, ``last_epoch``) is saved by the
``LRScheduler`` hook in both Detectron2 v0.6 and main.

Official timing: the LR is set *after* each optimizer step from that step's index, so iteration 0
runs at the base LRs (text encoder included, despite its warm-up) and iteration ``k > 0`` at the
rule's value for step ``k - 1``. ``LRMultiplier`` sets the LR of iteration ``k`` from ``where = k /
max_iter``; the multipliers below turn it back into ``k`` and apply that shift.
"""
import bisect
from typing import List, Sequence

import torch
from detectron2.config import CfgNode, configurable
from detectron2.solver import LRMultiplier
from fvcore.common.param_scheduler import ParamScheduler

from .optimizer import BACKBONE, TEXT_ENCODER, TRANSFORMER

MDETR_SCHEDULES = ("linear_with_warmup", "step", "multistep", "all_linear_with_warmup")


class _OfficialTimingScheduler(ParamScheduler):
    """Multiplier of iteration ``k`` = 1 for ``k == 0``, else ``value_after_step(k - 1)``."""

    def __init__(self, num_updates: int):
        self.num_updates = num_updates

    def value_after_step(self, step: int) -> float:
        raise NotImplementedError

    def __call__(self, where: float) -> float:
        # Integer steps, not fvcore's epsilon-floor: exact for any MAX_ITER.
        k = int(round(where * self.num_updates))
        return 1.0 if k <= 0 else self.value_after_step(k - 1)


class MilestoneDecayScheduler(_OfficialTimingScheduler):
    """``gamma ** (number of milestones <= step)`` (official "step" and "multistep")."""

    def __init__(self, num_updates: int, milestones: Sequence[int], gamma: float):
        super().__init__(num_updates)
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma

    def value_after_step(self, step: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, step)


class LinearWarmupDecayScheduler(_OfficialTimingScheduler):
    """Linear warm-up from 0 over ``warmup_steps``, then linear decay to 0 at ``num_updates``."""

    def __init__(self, num_updates: int, warmup_steps: int):
        super().__init__(num_updates)
        self.warmup_steps = warmup_steps

    def value_after_step(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        remaining = float(self.num_updates - step)
        return max(0.0, remaining / float(max(1, self.num_updates - self.warmup_steps)))


class GroupLRMultiplier(LRMultiplier):
    """``LRMultiplier`` with one fvcore multiplier per optimizer param group (same order)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multipliers: Sequence[ParamScheduler],
        max_iter: int,
        last_iter: int = -1,
    ):
        if len(multipliers) != len(optimizer.param_groups):
            raise ValueError(
                f"{len(multipliers)} multipliers for {len(optimizer.param_groups)} param groups"
            )
        # Set before the parent constructor, which already calls get_lr().
        self._multipliers = list(multipliers)
        super().__init__(optimizer, multipliers[0], max_iter, last_iter)

    def get_lr(self) -> List[float]:
        where = self.last_epoch / self._max_iter
        return [base_lr * m(where) for base_lr, m in zip(self.base_lrs, self._multipliers)]


def _drop_milestones(first: int, period: int, max_iter: int) -> List[int]:
    if first <= 0 or first >= max_iter:
        return []
    if period <= 0:
        raise ValueError("SOLVER.LR_DROP_PERIOD must be > 0 for this schedule")
    return list(range(first, max_iter, period))


def build_mdetr_group_multipliers(
    schedule: str, *, max_iter: int, lr_drop: int, lr_drop_period: int, warmup_fraction: float
) -> dict:
    """Multiplier of each group kind (backbone, text_encoder, transformer) for ``schedule``."""
    if schedule not in MDETR_SCHEDULES:
        raise ValueError(f"Unknown MDETR schedule {schedule!r}; expected one of {MDETR_SCHEDULES}")
    # Python's round, like the official `round(fraction_warmup_steps * num_training_steps)`.
    linear = LinearWarmupDecayScheduler(max_iter, round(warmup_fraction * max_iter))
    # "step" decays every LR_DROP iterations (official `0.1 ** (epoch // lr_drop)`).
    step = MilestoneDecayScheduler(max_iter, _drop_milestones(lr_drop, lr_drop, max_iter), 0.1)
    if schedule == "linear_with_warmup":
        return {BACKBONE: step, TRANSFORMER: step, TEXT_ENCODER: linear}
    if schedule == "step":
        return {BACKBONE: step, TRANSFORMER: step, TEXT_ENCODER: step}
    if schedule == "multistep":
        multi = MilestoneDecayScheduler(
            max_iter, _drop_milestones(lr_drop, lr_drop_period, max_iter), 0.5
        )
        return {BACKBONE: multi, TRANSFORMER: multi, TEXT_ENCODER: multi}
    return {BACKBONE: linear, TRANSFORMER: linear, TEXT_ENCODER: linear}


def _scheduler_args(cfg: CfgNode, optimizer: torch.optim.Optimizer | None = None) -> dict:
    return {
        "optimizer": optimizer,
        "schedule": cfg.SOLVER.LR_SCHEDULER_NAME,
        "max_iter": cfg.SOLVER.MAX_ITER,
        "lr_drop": cfg.SOLVER.LR_DROP,
        "lr_drop_period": cfg.SOLVER.LR_DROP_PERIOD,
        "warmup_fraction": cfg.SOLVER.WARMUP_FRACTION,
    }


@configurable(from_config=_scheduler_args)
def build_mdetr_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    max_iter: int,
    lr_drop: int = 0,
    lr_drop_period: int = 0,
    warmup_fraction: float = 0.01,
) -> GroupLRMultiplier:
    """Per-group scheduler for an optimizer built by :func:`build_mdetr_optimizer`:
    ``build_mdetr_lr_scheduler(cfg, optimizer)``, or with the keywords (LazyConfig recipes; the
    arguments are the ``SOLVER`` keys of the same names).

    Groups without an ``mdetr_group`` key follow the transformer's rule.
    """
    kinds = build_mdetr_group_multipliers(
        schedule,
        max_iter=max_iter,
        lr_drop=lr_drop,
        lr_drop_period=lr_drop_period,
        warmup_fraction=warmup_fraction,
    )
    multipliers = [kinds[g.get("mdetr_group", TRANSFORMER)] for g in optimizer.param_groups]
    return GroupLRMultiplier(optimizer, multipliers, max_iter=max_iter)
