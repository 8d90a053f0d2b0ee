"""Training engine: MDETRTrainer, its optimizer, schedules (in epochs too), EMA, job set-up and a
CPU-capable launcher."""
from .defaults import check_device, default_argument_parser, default_setup
from .ema import EMAHook, ModelEMA
from .epochs import ResolvedSchedule, iterations_per_epoch, resolve_epoch_schedule
from .launch import launch
from .lr_scheduler import (
    GroupLRMultiplier,
    LinearWarmupDecayScheduler,
    MilestoneDecayScheduler,
    build_mdetr_lr_scheduler,
)
from .optimizer import build_mdetr_optimizer, get_mdetr_optimizer_params, param_group_of
from .stream_hook import TrainStreamHook
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
    "ResolvedSchedule",
    "TrainStreamHook",
    "build_mdetr_lr_scheduler",
    "build_mdetr_optimizer",
    "check_device",
    "default_argument_parser",
    "default_setup",
    "get_mdetr_optimizer_params",
    "iterations_per_epoch",
    "launch",
    "param_group_of",
    "resolve_epoch_schedule",
]
