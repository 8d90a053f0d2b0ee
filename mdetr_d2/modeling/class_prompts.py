"""Class prompts: class names as MDETR captions, and the detections read back from the outputs.

MDETR detects what a caption names; to use it as a detector over a class list (reference §4.5, the
official LVIS evaluation) the names become captions:

* ``per_class``: every cleaned name is its own caption (the official protocol). Captions are encoded
  and decoded in chunks; every query of caption ``c`` is a detection of class ``c`` scored
  ``1 - p(no-object)``.
* ``joined``: names are joined by ``" . "`` into as few prompts as the token slots allow, each name
  one span; a query is one detection of the class whose span holds the most token probability,
  scored by that mass. Far fewer captions than classes, so far less compute, but not the official
  arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from detectron2.data import MetadataCatalog

from ..structures import clean_category_name
from ..structures.tokenizer import NO_OBJECT_SLOT

__all__ = ["PROMPT_STYLES", "SEPARATOR", "ClassPromptSettings", "ClassPrompts", "PromptChunk",
           "build_class_prompts", "caption_of", "class_names_of", "route_inputs"]

PROMPT_STYLES = ("per_class", "joined")
SEPARATOR = " . "


@dataclass(frozen=True)
class ClassPromptSettings:
    """How a class list becomes prompts (``MODEL.MDETR.CLASS_PROMPTS``).

    Attributes:
        names: class names in contiguous-id order; empty = take them from elsewhere (the input's
            ``classes``, or the ``thing_classes`` of ``dataset``).
        dataset: dataset whose metadata ``thing_classes`` is the class list when neither the input
            nor ``names`` gives one (``DATASETS.TEST[0]``); empty = none.
        style: ``"per_class"`` or ``"joined"``.
        chunk_size: captions (per_class) or prompts (joined) encoded and decoded together.
        max_prompt_tokens: joined: tokens of one prompt, ``<s>`` and ``</s>`` included (at most
            255).
    """

    names: tuple[str, ...] = ()
    dataset: str = ""
    style: str = "per_class"
    chunk_size: int = 32
    max_prompt_tokens: int = NO_OBJECT_SLOT

    def __post_init__(self):
        key = "MODEL.MDETR.CLASS_PROMPTS"
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"{key}.STYLE must be one of {PROMPT_STYLES}, got {self.style!r}")
        if self.chunk_size < 1:
            raise ValueError(f"{key}.CHUNK_SIZE must be positive, got {self.chunk_size}")
        if not 3 <= self.max_prompt_tokens <= NO_OBJECT_SLOT:
            raise ValueError(f"{key}.MAX_PROMPT_TOKENS must be in [3, {NO_OBJECT_SLOT}] (slot "
                             f"{NO_OBJECT_SLOT} is 'no object'), got {self.max_prompt_tokens}")


def build_class_prompts(settings: ClassPromptSettings, names: Sequence[str], tokenizer,
                        token_limit: int | None) -> "ClassPrompts":
    """The prompts of ``names`` in ``settings``, for a text encoder that takes at most
    ``token_limit`` tokens per caption (None = no limit). A function, not a method: with a
    LazyConfig, ``settings`` arrives as an OmegaConf node with the same fields."""
    max_tokens = min(settings.max_prompt_tokens, token_limit or settings.max_prompt_tokens)
    return ClassPrompts.build(names, tokenizer, settings.style, settings.chunk_size, max_tokens)


def caption_of(x: dict, default_caption: str) -> str | None:
    """The caption an inference input is grounded on, or None for class-prompt detection (an
    input with ``classes``, or with no ``caption`` when ``default_caption`` is empty)."""
    if x.get("caption") is not None:
        return x["caption"]
    if x.get("classes") is not None or not default_caption:
        return None
    return default_caption


def class_names_of(x: dict, index: int, settings: ClassPromptSettings) -> Sequence[str]:
    """The class list of a class-prompt input: its ``classes``, else ``settings.names``, else the
    ``thing_classes`` of ``settings.dataset`` (``index`` only names the input in the error).

    Raises:
        ValueError: none of them gives a list.
    """
    if x.get("classes") is not None:
        return x["classes"]
    if settings.names:
        return settings.names
    dataset = settings.dataset
    names = MetadataCatalog.get(dataset).get("thing_classes") if dataset else None
    if not names:
        where = "DATASETS.TEST is empty"
        if dataset:
            where = (f"DATASETS.TEST[0] = {dataset!r} has no metadata thing_classes (a "
                     f"COCO-format dataset gets them when it is loaded)")
        raise ValueError(
            f"MDETR input {index} has no 'caption' and no class list. Give the input a "
            f"'caption' or 'classes', or set MODEL.MDETR.DEFAULT_CAPTION (a caption for every "
            f"image) or MODEL.MDETR.CLASS_PROMPTS.NAMES (class names to detect); {where}."
        )
    return names


@dataclass
class PromptChunk:
    """Captions run through the cross-encoder and decoder together, and the class spans in them.

    Attributes:
        captions: the chunk's captions.
        spans: global ids (into :class:`ClassPrompts` ``span_*``) of the spans of each caption,
            ``C×S`` padded with -1 (per_class: ``C×1``, span ``i`` = caption ``i``).
        token_map: joined only: ``C×S×255`` 0/1, the tokens of each span (None for per_class).
    """

    captions: list[str]
    spans: torch.Tensor
    token_map: torch.Tensor | None = None


class ClassPrompts:
    """A class list turned into prompt chunks, in one style.

    Attributes:
        names: the class names as given.
        style: ``"per_class"`` or ``"joined"``.
        chunks: the :class:`PromptChunk` list, in class order.
        span_class: class index of every span (global span id order).
        span_chars: ``[begin, end)`` of every span in its caption.
        span_text: the text of every span.
    """

    def __init__(self, names: Sequence[str], style: str, chunks: list[PromptChunk],
                 span_class: list[int], span_chars: list[tuple[int, int]], span_text: list[str]):
        self.names = tuple(names)
        self.style = style
        self.chunks = chunks
        self.span_class = torch.tensor(span_class, dtype=torch.long)
        self.span_chars = torch.tensor(span_chars, dtype=torch.long).reshape(-1, 2)
        self.span_text = span_text

    @classmethod
    def build(cls, names: Sequence[str], tokenizer, style: str = "per_class",
              chunk_size: int = 32, max_prompt_tokens: int = NO_OBJECT_SLOT) -> "ClassPrompts":
        """The prompts of ``names`` for ``tokenizer``, each name cleaned as the official LVIS
        evaluation does (:func:`mdetr_d2.structures.clean_category_name`; trailing spaces kept in
        per_class captions, as officially).

        Raises:
            ValueError: no names, a name that is empty once cleaned, or (joined) a name too long
                for a prompt.
        """
        if not names:
            raise ValueError("class prompts need at least one class name")
        cleaned = [clean_category_name(str(n)) for n in names]
        for i, (name, text) in enumerate(zip(names, cleaned)):
            if not text.strip():
                raise ValueError(f"class {i} ({name!r}) is empty once cleaned of parentheses and "
                                 f"underscores")
        if style == "per_class":
            return cls._per_class(names, cleaned, chunk_size)
        if style == "joined":
            return cls._joined(names, cleaned, tokenizer, chunk_size, max_prompt_tokens)
        raise ValueError(f"class prompt style must be one of {PROMPT_STYLES}, got {style!r}")

    @classmethod
    def _per_class(cls, names, cleaned: list[str], chunk_size: int) -> "ClassPrompts":
        chunks = [PromptChunk(cleaned[s:s + chunk_size],
                              torch.arange(s, min(s + chunk_size, len(cleaned)))[:, None])
                  for s in range(0, len(cleaned), chunk_size)]
        return cls(names, "per_class", chunks, list(range(len(cleaned))),
                   [(0, len(c)) for c in cleaned], cleaned)

    @classmethod
    def _joined(cls, names, cleaned: list[str], tokenizer, chunk_size: int,
                max_tokens: int) -> "ClassPrompts":
        # Names inside a prompt: spaces collapsed and stripped, so that separators stay " . ".
        words = [" ".join(c.split()) for c in cleaned]

        def length(members: list[int]) -> int:
            return len(tokenizer(SEPARATOR.join(words[j] for j in members))["input_ids"])

        groups: list[list[int]] = []
        current: list[int] = []
        for i in range(len(words)):
            if current and length(current + [i]) <= max_tokens:
                current.append(i)
                continue
            if current:
                groups.append(current)
            if length([i]) > max_tokens:
                raise ValueError(f"class {i} ({names[i]!r}) alone takes more than {max_tokens} "
                                 f"tokens")
            current = [i]
        groups.append(current)

        prompts, prompt_spans = [], []
        span_class, span_chars, span_text = [], [], []
        for members in groups:
            text, spans = "", []
            for j in members:
                if text:
                    text += SEPARATOR
                spans.append(len(span_class))
                span_class.append(j)
                span_chars.append((len(text), len(text) + len(words[j])))
                span_text.append(words[j])
                text += words[j]
            prompts.append(text)
            prompt_spans.append(spans)

        chunks = []
        for s in range(0, len(prompts), chunk_size):
            captions, members = prompts[s:s + chunk_size], prompt_spans[s:s + chunk_size]
            width = max(len(m) for m in members)
            spans = torch.full((len(captions), width), -1, dtype=torch.long)
            token_map = torch.zeros((len(captions), width, NO_OBJECT_SLOT))
            for p, (caption, ids) in enumerate(zip(captions, members)):
                encoding = tokenizer(caption)
                offsets = [encoding.token_to_chars(t) for t in range(len(encoding["input_ids"]))]
                for k, span_id in enumerate(ids):
                    spans[p, k] = span_id
                    begin, end = span_chars[span_id]
                    for t, chars in enumerate(offsets):
                        # A token belongs to a name when it covers one of its characters
                        # (special and whitespace-only tokens cover none).
                        if chars is not None and max(chars.start, begin) < min(chars.end, end):
                            token_map[p, k, t] = 1.0
            chunks.append(PromptChunk(captions, spans, token_map))
        return cls(names, "joined", chunks, span_class, span_chars, span_text)

    def read(self, chunk: PromptChunk, pred_logits: torch.Tensor, pred_boxes: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Detections of one chunk's outputs (``pred_logits`` C×Q×256, ``pred_boxes`` C×Q×4).

        Returns:
            ``(boxes, scores, spans)``: normalised cxcywh boxes (N×4), scores (N) and the global
            span id of each detection (N), N = C·Q, ordered by caption then query.
        """
        probs = pred_logits.float().softmax(-1)
        c, q = probs.shape[:2]
        boxes = pred_boxes.float().reshape(c * q, 4)
        if chunk.token_map is None:
            # The official LVIS post-processing: each query is a detection of its caption's class.
            scores = 1 - probs[..., -1]
            spans = chunk.spans.to(probs.device).expand(c, q)
            return boxes, scores.reshape(-1), spans.reshape(-1)
        token_map = chunk.token_map.to(probs)
        mass = torch.einsum("cqt,cst->cqs", probs[..., :NO_OBJECT_SLOT], token_map)
        mass = mass.masked_fill((chunk.spans < 0).to(probs.device)[:, None, :], -1.0)
        scores, best = mass.max(-1)
        spans = chunk.spans.to(probs.device).gather(1, best)
        return boxes, scores.reshape(-1), spans.reshape(-1)


def route_inputs(batched_inputs: list[dict], default_caption: str, settings: ClassPromptSettings,
                 ground: Callable[[list[dict], list[str]], list[dict]],
                 detect: Callable[[dict, Sequence[str]], dict]) -> list[dict]:
    """Inference results of a batch, in input order: the inputs with a caption (see
    :func:`caption_of`) are grounded together, ``ground(inputs, captions)``; every other one is
    detected against its class list (:func:`class_names_of`), ``detect(input, names)``."""
    captions = [caption_of(x, default_caption) for x in batched_inputs]
    grounded = [i for i, c in enumerate(captions) if c is not None]
    results: list = [None] * len(batched_inputs)
    if grounded:
        outputs = ground([batched_inputs[i] for i in grounded], [captions[i] for i in grounded])
        for i, result in zip(grounded, outputs):
            results[i] = result
    for i, x in enumerate(batched_inputs):
        if captions[i] is None:
            results[i] = detect(x, class_names_of(x, i, settings))
    return results
