"""Caption character spans and token positions, both ways (reference §3.1, §3.5, §4).

* :func:`span_to_token_range`: a ``[begin, end)`` character span -> its tokens, with the official
  whitespace fallbacks (the one implementation: positive maps, the official contrastive lookup);
* :func:`spans_to_tensor` / :func:`tensor_to_spans`: per-box span lists <-> the padded tensor the
  mapper hands to the model (``gt_tokens_positive``);
* :func:`tied_spans`: token probabilities -> the character span of the caption each box is tied to.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "PHRASE_TOKEN_THRESHOLD",
    "Span",
    "span_to_token_range",
    "spans_to_tensor",
    "tensor_to_spans",
    "tied_spans",
]

Span = Sequence[int]  # [begin, end) character offsets into the caption

# Characters retried when the first / last character of a span maps to no token (whitespace:
# RoBERTa's offsets leave out the leading space of a word): begin moves right, end moves left.
_BEGIN_FALLBACKS = (1, 2)  # added to ``begin``
_END_FALLBACKS = (2, 3)  # subtracted from ``end`` (``end - 1`` is the span's last character)

# A token counts towards the phrase a box is tied to above this probability (the official demo's rule).
PHRASE_TOKEN_THRESHOLD = 0.1


def _first_token(tokenized, lookups) -> int | None:
    """The first token found by ``char_to_token(caption, char)`` over ``(caption, char)`` lookups;
    a lookup that fails (a negative character raises in the fast tokenizer) finds nothing."""
    for caption, char in lookups:
        try:
            token = tokenized.char_to_token(caption, char)
        except Exception:  # OverflowError/TypeError on invalid indices: "no token"
            token = None
        if token is not None:
            return token
    return None


def span_to_token_range(tokenized, begin: int, end: int, caption: int = 0,
                        fallback_caption: int | None = None) -> tuple[int, int] | None:
    """Inclusive token range ``(first, last)`` of the character span ``[begin, end)``.

    ``begin`` and ``end - 1`` are looked up with the fast tokenizer's ``char_to_token`` in caption
    ``caption`` of ``tokenized``; a side that maps to no token is retried with the official
    whitespace fallbacks, ``begin + 1``, ``begin + 2`` and ``end - 2``, ``end - 3``, looked up in
    caption ``fallback_caption`` (default: the same caption). The official contrastive-alignment
    loss reads its fallbacks in caption 0 of the batch whatever the span's caption (reference §3.5):
    pass ``fallback_caption=0`` to reproduce it.

    Returns:
        ``(first, last)``, or None when either side stays unresolved (the official code then skips
        the span).
    """
    fallback = caption if fallback_caption is None else fallback_caption
    first = _first_token(tokenized, [(caption, begin)]
                         + [(fallback, begin + s) for s in _BEGIN_FALLBACKS])
    last = _first_token(tokenized, [(caption, end - 1)]
                        + [(fallback, end - s) for s in _END_FALLBACKS])
    if first is None or last is None:
        return None
    return first, last


def spans_to_tensor(span_groups: Sequence[Sequence[Span]]) -> torch.Tensor:
    """Per-box span lists -> ``n x S x 2`` int64 tensor padded with -1 (S = most spans of one box).

    A tensor survives ``Instances`` indexing (box filtering) and shared-memory transfer unchanged.
    """
    n = len(span_groups)
    width = max((len(g) for g in span_groups), default=0)
    out = torch.full((n, max(width, 1), 2), -1, dtype=torch.int64)
    for i, group in enumerate(span_groups):
        if group:
            out[i, : len(group)] = torch.as_tensor(
                [[int(b), int(e)] for b, e in group], dtype=torch.int64
            )
    return out


def tensor_to_spans(spans: torch.Tensor) -> list[list[list[int]]]:
    """Inverse of :func:`spans_to_tensor`: per box, the list of ``[begin, end)`` spans."""
    return [[[int(b), int(e)] for b, e in row.tolist() if b >= 0] for row in spans]


def tied_spans(token_probs: torch.Tensor, tokenized, index: int,
               threshold: float = PHRASE_TOKEN_THRESHOLD) -> torch.Tensor:
    """Character span ``[beg, end)`` of the caption text each query predicts (Q×2, -1 when none).

    The span runs from the first to the last caption token whose probability exceeds ``threshold``;
    when none does, the most probable caption token alone. Special tokens map to no characters.

    Args:
        token_probs: ``Q×T`` probabilities of caption ``index``'s token positions.
        tokenized: the tokenizer output of the batch of captions.
        index: the caption of the batch.
    """
    num_tokens = int(tokenized["attention_mask"][index].sum())
    char_spans = []
    for t in range(min(num_tokens, token_probs.shape[1])):
        chars = tokenized.token_to_chars(index, t)
        char_spans.append(None if chars is None else (chars.start, chars.end))
    valid = torch.tensor([s is not None for s in char_spans] + [False] * (token_probs.shape[1] - len(char_spans)),
                         device=token_probs.device)
    spans = torch.full((token_probs.shape[0], 2), -1, dtype=torch.long)
    if not valid.any():
        return spans
    probs = token_probs.masked_fill(~valid, 0)
    best = probs.argmax(1)
    for q in range(probs.shape[0]):
        selected = (probs[q] > threshold).nonzero().flatten().tolist() or [int(best[q])]
        spans[q, 0] = char_spans[selected[0]][0]
        spans[q, 1] = char_spans[selected[-1]][1]
    return spans
