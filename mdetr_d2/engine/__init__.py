"""Training engine: MDETRTrainer, its optimizer, schedules, EMA and a CPU-capable launcher."""
from .config import add_mdetr_solver_config
from .ema import EMAHook, ModelEMA
from .launch import launch
from .lr_scheduler import (
    GroupLRMultiplier,
    LinearWarmupDecayScheduler,
    MilestoneDecayScheduler,
    build_mdetr_lr_scheduler,
)
from .optimizer import build_mdetr_optimizer, get_mdetr_optimizer_params, param_group_of
from .train_loop import MDETRSimpleTrainer
from .trainer import MDETRTrainer

__all__ = [
    "EMAHook",
    "GroupLRMultiplier",
    "LinearWarmupDecayScheduler",
    "MDETRSimpleTrainer",
    "MDETRTrainer",
    "MilestoneDecayScheduler",
    "ModelEMA",
    "add_mdetr_solver_config",
    "build_mdetr_lr_scheduler",
    "build_mdetr_optimizer",
    "get_mdetr_optimizer_params",
    "launch",
    "param_group_of",
]
