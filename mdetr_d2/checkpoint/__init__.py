from .build import build_official_model, official_cfg
from .checkpointer import MDETRCheckpointer
from .official import (
    CheckpointError,
    convert_official_state_dict,
    is_official_checkpoint,
    load_checkpoint_file,
    official_args_to_cfg,
    select_official_weights,
)

__all__ = [
    "build_official_model",
    "official_cfg",
    "MDETRCheckpointer",
    "CheckpointError",
    "convert_official_state_dict",
    "is_official_checkpoint",
    "load_checkpoint_file",
    "official_args_to_cfg",
    "select_official_weights",
]
