"""MDETR's augmentations as Detectron2 ``Augmentation``/``Transform``s (reference §6).

* :class:`MDETRResize`: the official resize rule, which differs from ``ResizeShortestEdge`` (§6.1, §9.2.12).
* :class:`RandomSizeCrop`: random crop of random size that keeps every box (up to N tries).
* :class:`RandomSelect`: coin flip between two augmentation chains.
* :class:`TextAwareHFlip`: horizontal flip that swaps "left"/"right" in the caption and re-derives the
  spans (off in every released recipe; §6.3).
* :func:`build_mdetr_augmentation`: the "cautious" (natural images) and "clevr" chains, train and eval.
"""

from __future__ import annotations

import bisect
import re
from typing import Sequence

import numpy as np
from detectron2.data import transforms as T
from detectron2.data.transforms import Augmentation, AugmentationList
from fvcore.transforms.transform import CropTransform, HFlipTransform, NoOpTransform
from PIL import Image

__all__ = [
    "AUGMENTATION_PRESETS",
    "MDETRResize",
    "RandomSizeCrop",
    "RandomSelect",
    "TextAwareHFlip",
    "CaptionHFlipTransform",
    "swap_left_right",
    "mdetr_resize_shape",
    "build_mdetr_augmentation",
    "augmentation_args_from_config",
    "build_augmentation_from_config",
]

# Official sizes (§6.1, §6.2). "scales": shorter side of the final resize (uniform choice); "max_size":
# cap on the longer side; "pre_crop_scales": resize before the crop in branch B; "crop_size": (min, max)
# of the crop sides; "test_size"/"test_max_size": evaluation resize (0 = no resize).
AUGMENTATION_PRESETS = {
    "cautious": dict(
        scales=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
        max_size=1333,
        pre_crop_scales=(400, 500, 600),
        crop_size=(384, 1333),
        test_size=800,
        test_max_size=1333,
    ),
    "clevr": dict(
        scales=(256, 288, 320, 352, 384),
        max_size=512,
        pre_crop_scales=(320, 352, 384),
        crop_size=(256, 512),
        test_size=0,
        test_max_size=0,
    ),
}


def mdetr_resize_shape(h: int, w: int, size: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(h, w)`` of MDETR's resize of an ``h x w`` image to shorter side ``size``.

    The rule (§6.1): if the longer side would exceed ``max_size``, the target shorter side becomes
    ``round(max_size * short / long)``; an image whose shorter side already equals the target is left
    untouched; otherwise the shorter side becomes the target and the longer side is *floored*. So the
    longer side can exceed ``max_size`` (2000x100 -> 1340x67), unlike ``ResizeShortestEdge``.
    """
    short, long = (w, h) if w <= h else (h, w)
    if max_size:
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if short == size:
        return h, w
    if w < h:
        return int(size * h / w), size
    return size, int(size * w / h)


class MDETRResize(Augmentation):
    """Resize to a shorter side chosen uniformly from ``scales``, with MDETR's rounding (§6.1).

    Pixels are resampled by PIL bilinear (with PIL's antialiasing when shrinking), as torchvision's
    resize of a PIL image in the official code; boxes are scaled by the exact per-axis ratios.
    """

    def __init__(self, scales: Sequence[int], max_size: int | None = None):
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        self.max_size = int(max_size) if max_size else None
        if not self.scales:
            raise ValueError("MDETRResize needs at least one scale")

    def get_transform(self, image):
        h, w = image.shape[:2]
        size = (
            self.scales[np.random.randint(len(self.scales))]
            if len(self.scales) > 1
            else self.scales[0]
        )
        new_h, new_w = mdetr_resize_shape(h, w, size, self.max_size)
        if (new_h, new_w) == (h, w):
            return NoOpTransform()
        return T.ResizeTransform(h, w, new_h, new_w, Image.BILINEAR)


def _boxes_kept(boxes: np.ndarray, x0: int, y0: int, w: int, h: int) -> int:
    """Number of boxes with positive width and height once clipped to the window."""
    x1 = np.clip(boxes[:, 0] - x0, 0, w)
    y1 = np.clip(boxes[:, 1] - y0, 0, h)
    x2 = np.clip(boxes[:, 2] - x0, 0, w)
    y2 = np.clip(boxes[:, 3] - y0, 0, h)
    return int(np.count_nonzero((x2 > x1) & (y2 > y1)))


class RandomSizeCrop(Augmentation):
    """Crop a random ``w x h`` window, ``w ~ U{min_size..min(W, max_size)}`` (same for h), at a random place.

    With ``respect_boxes`` the window is redrawn (up to ``max_tries`` times in all) until no box is lost;
    the last try is accepted regardless (§6.1). Boxes are then clipped and empty ones dropped by the
    mapper. When an image side is smaller than ``min_size`` the whole side is used (the official code
    would raise).
    """

    def __init__(
        self, min_size: int, max_size: int, respect_boxes: bool = True, max_tries: int = 100
    ):
        super().__init__()
        self.min_size = int(min_size)
        self.max_size = int(max_size)
        self.respect_boxes = respect_boxes
        self.max_tries = int(max_tries)

    def _side(self, extent: int) -> int:
        high = min(extent, self.max_size)
        low = min(self.min_size, high)
        return int(np.random.randint(low, high + 1))

    def get_transform(self, image, boxes=None):
        h, w = image.shape[:2]
        n_boxes = 0 if boxes is None else len(boxes)
        tries = self.max_tries if self.respect_boxes else 1
        for attempt in range(tries):
            cw, ch = self._side(w), self._side(h)
            y0 = int(np.random.randint(0, h - ch + 1))
            x0 = int(np.random.randint(0, w - cw + 1))
            if (
                attempt == tries - 1
                or n_boxes == 0
                or _boxes_kept(np.asarray(boxes, dtype=np.float64), x0, y0, cw, ch) == n_boxes
            ):
                break
        return CropTransform(x0, y0, cw, ch, orig_w=w, orig_h=h)


class RandomSelect(Augmentation):
    """Apply ``first`` with probability ``prob`` and ``second`` otherwise (each a list of augmentations)."""

    def __init__(self, first: Sequence, second: Sequence, prob: float = 0.5):
        super().__init__()
        self.first = AugmentationList(list(first))
        self.second = AugmentationList(list(second))
        self.prob = prob

    def __call__(self, aug_input):
        chosen = self.first if np.random.rand() < self.prob else self.second
        return chosen(aug_input)

    def get_transform(
        self, *args
    ):  # pragma: no cover - a chain cannot be planned without running it
        raise NotImplementedError("RandomSelect must be called on an AugInput")


# Whole words only ("bright" stays "bright", unlike the official plain substring swap); "leftmost" ok.
_LEFT_RIGHT = re.compile(r"\b(left|right)(?=(?:most)?\b)", re.IGNORECASE)


def _swap_word(word: str) -> str:
    new = "right" if word.lower() == "left" else "left"
    if word.isupper():
        return new.upper()
    if word[0].isupper():
        return new.capitalize()
    return new


def swap_left_right(
    caption: str, span_groups: Sequence[Sequence[Sequence[int]]]
) -> tuple[str, list[list[list[int]]]]:
    """Swap the words "left" and "right" in ``caption`` and move every ``[begin, end)`` span with the text.

    Args:
        caption: the caption.
        span_groups: e.g. ``tokens_positive`` (per box, a list of spans).

    Returns:
        the new caption and the span groups re-expressed in its character offsets.
    """
    pieces, edits, last = [], [], 0  # edits: (old_start, old_end, new_start, new_end)
    shift = 0
    for match in _LEFT_RIGHT.finditer(caption):
        start, end = match.span()
        new_word = _swap_word(match.group(0))
        pieces.append(caption[last:start])
        pieces.append(new_word)
        edits.append((start, end, start + shift, start + shift + len(new_word)))
        shift += len(new_word) - (end - start)
        last = end
    if not edits:
        return caption, [[list(s) for s in group] for group in span_groups]
    pieces.append(caption[last:])
    new_caption = "".join(pieces)
    starts = [e[0] for e in edits]

    def move(pos: int) -> int:
        i = bisect.bisect_right(starts, pos) - 1
        if i < 0:
            return pos
        old_start, old_end, new_start, new_end = edits[i]
        if pos >= old_end:  # after this (and every earlier) edit
            return pos + (new_end - old_end)
        return new_start + min(pos - old_start, new_end - new_start)  # inside the swapped word

    moved = []
    for group in span_groups:
        new_group = []
        for begin, end in group:
            # An end inside or at the end of a swapped word maps to the end of the new word.
            i = bisect.bisect_right(starts, end - 1) - 1 if end > 0 else -1
            if i >= 0 and edits[i][0] < end <= edits[i][1]:
                new_end = edits[i][3]
            else:
                new_end = move(end)
            new_group.append([move(begin), new_end])
        moved.append(new_group)
    return new_caption, moved


class CaptionHFlipTransform(HFlipTransform):
    """Horizontal flip that also swaps "left"/"right" in the caption (see :func:`swap_left_right`)."""

    def apply_caption(self, caption: str, span_groups):
        return swap_left_right(caption, span_groups)


class TextAwareHFlip(Augmentation):
    """Horizontal flip with probability ``prob`` that keeps caption, spans and boxes consistent (§6.3).

    The mapper calls ``apply_caption`` of the returned transform and rebuilds the positive map from the
    new caption. Off by default: no released model was trained with flips.
    """

    def __init__(self, prob: float = 0.5):
        super().__init__()
        self.prob = prob

    def get_transform(self, image):
        if np.random.rand() < self.prob:
            return CaptionHFlipTransform(image.shape[1])
        return NoOpTransform()


def build_mdetr_augmentation(
    kind: str = "cautious",
    is_train: bool = True,
    *,
    scales: Sequence[int] | None = None,
    max_size: int | None = None,
    pre_crop_scales: Sequence[int] | None = None,
    crop_size: Sequence[int] | None = None,
    crop_max_tries: int = 100,
    resize_only_prob: float = 0.5,
    test_size: int | None = None,
    test_max_size: int | None = None,
    text_aware_flip: bool = False,
    flip_prob: float = 0.5,
) -> list[Augmentation]:
    """The official augmentation chain of ``kind`` ("cautious" or "clevr"); None = the preset value.

    Training: [text-aware flip] -> coin flip (``resize_only_prob``) between
    ``MDETRResize(scales, max_size)`` and ``MDETRResize(pre_crop_scales) -> RandomSizeCrop(crop_size)
    -> MDETRResize(scales, max_size)``. Evaluation: ``MDETRResize([test_size], test_max_size)``, or
    nothing when ``test_size`` is 0 (CLEVR evaluates at the native 480x320).
    """
    if kind not in AUGMENTATION_PRESETS:
        raise ValueError(
            f"unknown MDETR augmentation kind {kind!r}; expected one of {sorted(AUGMENTATION_PRESETS)}"
        )
    preset = AUGMENTATION_PRESETS[kind]
    scales = tuple(scales) if scales else preset["scales"]
    max_size = preset["max_size"] if max_size is None else max_size
    max_size = None if max_size is not None and max_size < 0 else max_size
    if not is_train:
        test_size = preset["test_size"] if test_size is None else test_size
        test_max_size = preset["test_max_size"] if test_max_size is None else test_max_size
        if not test_size:
            return []
        return [
            MDETRResize([test_size], test_max_size if test_max_size and test_max_size > 0 else None)
        ]
    pre_crop_scales = tuple(pre_crop_scales) if pre_crop_scales else preset["pre_crop_scales"]
    crop_size = tuple(crop_size) if crop_size else preset["crop_size"]
    if len(crop_size) != 2:
        raise ValueError(f"crop_size must be (min, max), got {crop_size!r}")
    augs: list[Augmentation] = []
    if text_aware_flip:
        augs.append(TextAwareHFlip(flip_prob))
    augs.append(
        RandomSelect(
            [MDETRResize(scales, max_size)],
            [
                MDETRResize(pre_crop_scales),
                RandomSizeCrop(
                    crop_size[0], crop_size[1], respect_boxes=True, max_tries=crop_max_tries
                ),
                MDETRResize(scales, max_size),
            ],
            prob=resize_only_prob,
        )
    )
    return augs


def augmentation_args_from_config(cfg, is_train: bool) -> dict:
    """The arguments of :func:`build_mdetr_augmentation` given by the ``INPUT.MDETR.*`` keys."""
    c = cfg.INPUT.MDETR
    return {
        "kind": c.KIND,
        "is_train": is_train,
        "scales": list(c.SCALES) or None,
        "max_size": c.MAX_SIZE or None,
        "pre_crop_scales": list(c.PRE_CROP_SCALES) or None,
        "crop_size": list(c.CROP_SIZE) or None,
        "crop_max_tries": c.CROP_MAX_TRIES,
        "resize_only_prob": c.RESIZE_ONLY_PROB,
        "test_size": None if c.TEST_SIZE < 0 else c.TEST_SIZE,
        "test_max_size": c.TEST_MAX_SIZE or None,
        "text_aware_flip": c.TEXT_AWARE_FLIP,
        "flip_prob": c.FLIP_PROB,
    }


def build_augmentation_from_config(cfg, is_train: bool) -> list[Augmentation]:
    """:func:`build_mdetr_augmentation` from the ``INPUT.MDETR.*`` keys (``add_mdetr_config``)."""
    return build_mdetr_augmentation(**augmentation_args_from_config(cfg, is_train))
