"""MDETR data: dataset registration, loaders, augmentations and the dataset mapper.

Importing this package registers every MDETR dataset under ``$MDETR_DATASETS`` (lazily).
"""

from .dataset_mapper import BadRecordError, MDETRDatasetMapper, describe_record
from . import datasets
from .datasets import *  # noqa: F401,F403  (the datasets package's public API, listed once in its __all__)
from .train_stream import (
    BadRecordBudgetError,
    TrainDataStream,
    TrainingSet,
    build_train_stream,
    derive_seed,
    load_train_set,
    max_bad_records,
)
from .transforms import (
    MDETRResize,
    RandomSelect,
    RandomSizeCrop,
    TextAwareHFlip,
    build_augmentation_from_config,
    build_mdetr_augmentation,
    mdetr_resize_shape,
)

__all__ = [
    "BadRecordError",
    "MDETRDatasetMapper",
    "describe_record",
    *datasets.__all__,
    "BadRecordBudgetError",
    "TrainDataStream",
    "TrainingSet",
    "build_train_stream",
    "derive_seed",
    "load_train_set",
    "max_bad_records",
    "MDETRResize",
    "RandomSelect",
    "RandomSizeCrop",
    "TextAwareHFlip",
    "build_augmentation_from_config",
    "build_mdetr_augmentation",
    "mdetr_resize_shape",
]
