"""Caption spans -> token positions: the MDETR "positive map" (reference §3.1)."""

from __future__ import annotations

import logging
from typing import Sequence

import torch

logger = logging.getLogger(__name__)

Span = Sequence[int]  # [begin, end) character offsets into the caption

# Character offsets retried when the first / last character of a span maps to no token (whitespace:
# RoBERTa offsets exclude the leading space of a word). Begin moves right, end moves left (§3.1).
_BEGIN_RETRIES = (0, 1, 2)
_END_RETRIES = (1, 2, 3)  # subtracted from ``end``: end-1 first, then end-2, end-3


def _lookup(tokenized, char_index: int):
    """``char_to_token`` that treats a failing lookup (negative index, ...) as "no token"."""
    try:
        return tokenized.char_to_token(char_index)
    except Exception:  # the fast tokenizer raises OverflowError/TypeError on invalid indices
        return None


def span_to_token_range(tokenized, begin: int, end: int) -> tuple[int, int] | None:
    """Inclusive token range ``(first, last)`` covered by the character span ``[begin, end)``.

    Uses the fast tokenizer's ``char_to_token`` with the official whitespace fallbacks: begin is retried
    at ``begin+1``, ``begin+2``; end at ``end-2``, ``end-3``. Returns None when either side stays
    unresolved (the official code then skips the span).
    """
    first = last = None
    for shift in _BEGIN_RETRIES:
        first = _lookup(tokenized, begin + shift)
        if first is not None:
            break
    for shift in _END_RETRIES:
        last = _lookup(tokenized, end - shift)
        if last is not None:
            break
    if first is None or last is None:
        return None
    return first, last


def create_positive_map(
    tokenized,
    tokens_positive: Sequence[Sequence[Span]],
    max_len: int = 256,
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
    tokenizer, caption: str, tokens_positive: Sequence[Sequence[Span]], max_len: int = 256
) -> torch.Tensor:
    """Tokenize ``caption`` alone (no padding, no truncation) and build its binary positive map."""
    tokenized = tokenizer(caption)
    return create_positive_map(tokenized, tokens_positive, max_len=max_len, caption=caption)
