"""MDETR data: dataset registration, loaders, augmentations, positive maps and the dataset mapper.

Importing this package registers every MDETR dataset under ``$MDETR_DATASETS`` (lazily).
"""

from .dataset_mapper import (
    CLEVR_ATTRIBUTES,
    GQA_ANSWER_TYPES,
    BadRecordError,
    MDETRDatasetMapper,
    describe_record,
    encode_caption,
    encode_clevr_answer,
    encode_gqa_answer,
    spans_to_tensor,
    tensor_to_spans,
)
from . import datasets
from .datasets import *  # noqa: F401,F403  (the datasets package's public API, listed once in its __all__)
from .positive_map import create_positive_map, create_positive_map_from_caption, span_to_token_range
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
    "CLEVR_ATTRIBUTES",
    "GQA_ANSWER_TYPES",
    "BadRecordError",
    "MDETRDatasetMapper",
    "describe_record",
    "encode_caption",
    "encode_clevr_answer",
    "encode_gqa_answer",
    "spans_to_tensor",
    "tensor_to_spans",
    *datasets.__all__,
    "create_positive_map",
    "create_positive_map_from_caption",
    "span_to_token_range",
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
