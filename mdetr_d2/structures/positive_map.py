"""Caption spans -> token positions: the MDETR "positive map" (reference §3.1)."""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from .spans import Span, span_to_token_range
from .tokenizer import MAX_TOKEN_SLOTS

logger = logging.getLogger(__name__)

__all__ = ["create_positive_map", "create_positive_map_from_caption"]


def create_positive_map(
    tokenized,
    tokens_positive: Sequence[Sequence[Span]],
    max_len: int = MAX_TOKEN_SLOTS,
    caption: str | None = None,
) -> torch.Tensor:
    """Binary ``n_boxes x max_len`` map: row i marks the tokens of the spans of box i.

    Binary (0/1) on purpose: the official code normalizes each row, but its collate writes the maps
    into a boolean tensor, so the matcher and the losses see 0/1 targets (reference §3.1, §9.2.1).

    Only ``max_len - 1`` slots can hold tokens: the last slot is the "no object" class. Tokens at
    positions ``>= max_len - 1`` are dropped with a warning naming the caption (the official code would
    silently mark the no-object slot for position 255; captions that long cannot be supervised).

    Args:
        tokenized: the fast tokenizer's output for ONE caption (``BatchEncoding``; ``char_to_token``).
        tokens_positive: per box, a list of ``[begin, end)`` character spans.
        max_len: width of the map (256 in MDETR).
        caption: the caption, only used to name it in warnings.

    Returns:
        float32 tensor of shape ``(len(tokens_positive), max_len)`` with values in {0, 1}.
    """
    positive_map = torch.zeros((len(tokens_positive), max_len), dtype=torch.float32)
    limit = max_len - 1
    overflow = 0
    for row, spans in enumerate(tokens_positive):
        for begin, end in spans:
            token_range = span_to_token_range(tokenized, int(begin), int(end))
            if token_range is None:
                continue
            first, last = token_range
            if last >= limit:
                overflow = max(overflow, last)
            if first >= limit:
                continue
            positive_map[row, first : min(last, limit - 1) + 1] = 1.0
    if overflow:
        text = caption if caption is not None else "<caption not given>"
        logger.warning(
            "caption %r: a span reaches token %d but only token positions 0..%d can be grounded "
            "(slot %d is 'no object'); the tokens beyond were dropped from the positive map",
            text if len(text) <= 200 else text[:200] + "...",
            overflow,
            limit - 1,
            limit,
        )
    return positive_map


def create_positive_map_from_caption(
    tokenizer, caption: str, tokens_positive: Sequence[Sequence[Span]], max_len: int = MAX_TOKEN_SLOTS
) -> torch.Tensor:
    """Tokenize ``caption`` alone (no padding, no truncation) and build its binary positive map."""
    tokenized = tokenizer(caption)
    return create_positive_map(tokenized, tokens_positive, max_len=max_len, caption=caption)
