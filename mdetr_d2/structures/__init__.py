"""Bottom layer of mdetr_d2: what modeling, data and evaluation share.

Imports only the standard library, numpy, torch, transformers and Detectron2, never another
mdetr_d2 package. One concept, one module:

* ``tokenizer``: the text encoder's files (fast tokenizer, caption-length limit), token slots;
* ``spans``: caption character spans <-> token positions (the official fallback rules), span
  tensors, the phrase each box is tied to;
* ``positive_map``: the spans of every box as a binary token map;
* ``qa``: answer types, answer targets and vocabularies;
* ``class_names``: category names as captions.
"""
from .class_names import clean_category_name
from .positive_map import create_positive_map, create_positive_map_from_caption
from .qa import (
    CLEVR_ANSWER_TYPES,
    CLEVR_ATTRIBUTES,
    GQA_ANSWER_TYPES,
    encode_clevr_answer,
    encode_gqa_answer,
)
from .spans import span_to_token_range, spans_to_tensor, tensor_to_spans, tied_spans
from .tokenizer import (
    MAX_TOKEN_SLOTS,
    NO_OBJECT_SLOT,
    TextEncoderNotFound,
    build_tokenizer,
    encode_caption,
    max_caption_tokens,
    tokenize_captions,
)

__all__ = [
    "clean_category_name",
    "create_positive_map",
    "create_positive_map_from_caption",
    "CLEVR_ANSWER_TYPES",
    "CLEVR_ATTRIBUTES",
    "GQA_ANSWER_TYPES",
    "encode_clevr_answer",
    "encode_gqa_answer",
    "span_to_token_range",
    "spans_to_tensor",
    "tensor_to_spans",
    "tied_spans",
    "MAX_TOKEN_SLOTS",
    "NO_OBJECT_SLOT",
    "TextEncoderNotFound",
    "build_tokenizer",
    "encode_caption",
    "max_caption_tokens",
    "tokenize_captions",
]
