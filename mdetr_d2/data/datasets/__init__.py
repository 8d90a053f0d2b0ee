"""MDETR datasets: the MDETR-json loader, ``register_mdetr_json`` and the built-in registrations."""

from .mdetr_json import (
    MDETR_DATASET_NAMES,
    DatasetFormatError,
    dataset_root,
    load_clevr_questions,
    load_lvis_v1_json,
    load_mdetr_json,
    register_mdetr_dataset,
    register_mdetr_json,
)
from . import builtin  # noqa: F401  (registers every MDETR dataset, lazily)

__all__ = [
    "MDETR_DATASET_NAMES",
    "DatasetFormatError",
    "dataset_root",
    "load_clevr_questions",
    "load_lvis_v1_json",
    "load_mdetr_json",
    "register_mdetr_dataset",
    "register_mdetr_json",
]
