"""The three exported graphs: modules over plain tensors that run the model's own methods.

MDETR splits into a text part, run once per prompt, and an image part, run once per image:

* :class:`TextEncoderGraph`: token ids and attention mask -> resized text features and padding
  mask (everything but the tokenizer);
* :class:`ImageEncoderGraph`: the normalised padded images and their valid sizes -> the
  caption-independent image encodings (backbone, input projection, positional embedding, padding
  mask at stride 32, and the finer backbone levels the mask head reads);
* :class:`GroundingGraph`: image encodings + encoded text -> the raw outputs (cross-encoder,
  decoder and heads). ``image_index`` maps each text to its image, so one image is encoded once
  for many prompts (class prompts, many captions).

Together the image encoder and the grounding graph are the "image + prompt" network of
:meth:`MDETR.forward_network`. Each ``forward`` returns a dict, which Detectron2's
``TracingAdapter`` flattens in sorted-key order for tracing.
"""
from __future__ import annotations

import torch
from torch import nn

from ..modeling.meta_arch import MDETR, ImageFeatures
from ..modeling.text_encoder import EncodedText
from .manifest import ExportError

TEXT_INPUTS = ("input_ids", "attention_mask")
IMAGE_INPUTS = ("images", "image_sizes")
TEXT_FEATURES = ("text_features", "text_padding_mask")
# Backbone levels the mask head reads, besides the projected stride-32 map.
MASK_HEAD_LEVELS = ("res2", "res3", "res4")
# Raw outputs that post-processing reads (auxiliary-layer and training-only outputs are dropped).
INFERENCE_OUTPUTS = ("pred_logits", "pred_boxes", "pred_isfinal", "pred_masks")
QA_OUTPUT_PREFIX = "pred_answer"
# Raw outputs only the losses read (auxiliary layers, contrastive projections): not exported.
TRAINING_OUTPUTS = ("aux_outputs", "proj_queries", "proj_tokens", "img_pooled", "text_pooled",
                    "tokenized")


def pixel_padding_mask(images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """B×H×W bool mask, True outside each image's valid ``(h, w)`` (``image_sizes``: B×2 int64),
    the mask :meth:`MDETR.padding_mask` makes for a padded batch, as tensor arithmetic (so a
    traced graph follows the sizes given at run time)."""
    height, width = images.shape[-2:]
    rows = torch.arange(height, device=images.device)[None, :, None]
    cols = torch.arange(width, device=images.device)[None, None, :]
    return (rows >= image_sizes[:, 0, None, None]) | (cols >= image_sizes[:, 1, None, None])


def image_feature_names(model: MDETR) -> tuple[str, ...]:
    """Names of the image encodings the grounding graph takes, in its argument order."""
    levels = tuple(f"image_{k}" for k in MASK_HEAD_LEVELS) if model.masks else ()
    return ("image_features", "image_pos", "image_mask") + levels


class TextEncoderGraph(nn.Module):
    """``input_ids``, ``attention_mask`` (T×L int64) -> ``text_features`` (T×L×D float) and
    ``text_padding_mask`` (T×L bool, True = pad)."""

    def __init__(self, model: MDETR):
        super().__init__()
        self.text_encoder = model.text_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        features, padding_mask, _ = self.text_encoder.encode_tokens(input_ids, attention_mask)
        return {"text_features": features, "text_padding_mask": padding_mask}


class ImageEncoderGraph(nn.Module):
    """``images`` (B×3×H×W, normalised, zero-padded bottom/right) and ``image_sizes`` (B×2 int64,
    the valid ``(h, w)`` of each) -> the image encodings named by :func:`image_feature_names`:
    ``image_features`` (B×D×h×w, the projected stride-32 map), ``image_pos`` (its positional
    embedding), ``image_mask`` (B×h×w bool) and, for the mask head, ``image_res2..4``."""

    def __init__(self, model: MDETR):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self.model
        image = model.encode_image(images, pixel_padding_mask(images, image_sizes))
        out = {"image_features": image.projected, "image_pos": image.pos,
               "image_mask": image.masks[model.in_feature]}
        if model.masks:
            out.update({f"image_{k}": image.features[k] for k in MASK_HEAD_LEVELS})
        return out


class GroundingGraph(nn.Module):
    """Image encodings (B images, :func:`image_feature_names`), ``text_features``,
    ``text_padding_mask`` (T texts) and ``image_index`` (T int64: the image of each text) -> the raw
    outputs of the T (image, text) pairs: ``pred_logits`` (T×Q×256), ``pred_boxes`` (T×Q×4,
    normalised cxcywh), and where the model has them ``pred_isfinal``, ``pred_masks`` (T×Q×H/4×W/4
    logits) and the ``pred_answer*`` QA logits."""

    def __init__(self, model: MDETR):
        super().__init__()
        self.model = model

    def forward(self, *tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        model = self.model
        *image, text_features, text_padding_mask, image_index = tensors
        projected, pos, mask, *levels = image
        features = ImageFeatures(dict(zip(MASK_HEAD_LEVELS, levels)), {model.in_feature: mask},
                                 projected, pos).index_select(image_index)
        text = EncodedText(None, text_features, text_padding_mask)
        out = model.decode(model.encode(features, None, text))
        kept = {k: v for k, v in out.items()
                if k in INFERENCE_OUTPUTS or k.startswith(QA_OUTPUT_PREFIX)}
        unknown = sorted(set(out) - set(kept) - set(TRAINING_OUTPUTS))
        if unknown:
            # A head this export does not know: dropping its output would deploy a model that
            # silently lacks it, and the runtime's post-processing would not read it.
            raise ExportError(
                f"unsupported head for export: {type(model).__name__} returns {unknown}; the "
                f"export carries {list(INFERENCE_OUTPUTS)} and {QA_OUTPUT_PREFIX}* (QA heads)")
        return kept
