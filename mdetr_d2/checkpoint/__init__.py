from .build import build_official_model, official_cfg, official_cfg_of
from .checkpointer import MDETRCheckpointer, atomic_write
from .official import (
    CheckpointError,
    UnsafeCheckpointError,
    convert_official_state_dict,
    is_official_checkpoint,
    load_checkpoint_file,
    official_args_to_cfg,
    select_official_weights,
)

__all__ = [
    "build_official_model",
    "official_cfg",
    "official_cfg_of",
    "MDETRCheckpointer",
    "atomic_write",
    "CheckpointError",
    "UnsafeCheckpointError",
    "convert_official_state_dict",
    "is_official_checkpoint",
    "load_checkpoint_file",
    "official_args_to_cfg",
    "select_official_weights",
]
