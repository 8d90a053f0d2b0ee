"""From raw MDETR outputs to Detectron2 results in original image pixels (reference §4)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_convert

from ..structures.qa import ANSWER_KEY, CLEVR_ANSWER_TYPES, CLEVR_ATTRIBUTES, GQA_ANSWER_TYPES
from ..structures.spans import tied_spans


def scale_boxes(pred_boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised cxcywh boxes -> xyxy pixels of an image of ``size = (h, w)``."""
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=pred_boxes.dtype, device=pred_boxes.device)
    return box_convert(pred_boxes, "cxcywh", "xyxy") * scale


def upsample_masks(mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                   orig_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Stride-4 mask logits of one image (Q×h×w) -> Q×H×W bool masks at the original image size.

    Bilinear to the padded batch size, crop to the image, bilinear to the original size, then
    threshold the sigmoid (reference §4.3).
    """
    masks = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear", align_corners=False)
    masks = masks[..., : image_size[0], : image_size[1]]
    masks = F.interpolate(masks, size=tuple(orig_size), mode="bilinear", align_corners=False)
    return masks[0].sigmoid() > threshold


def detections_to_instances(outputs: dict, index: int, orig_size: tuple[int, int],
                            image_size: tuple[int, int], padded_size: tuple[int, int], caption: str,
                            mask_threshold: float = 0.5) -> Instances:
    """All queries of image ``index`` as ``Instances`` of the original image (no thresholding).

    Fields: ``pred_boxes`` (xyxy pixels), ``scores`` (1 − p(no-object), MDETR's ranking),
    ``pred_classes`` (0: class-agnostic), ``token_probs`` (Q×256 softmax over the token slots, slot 255 =
    no object), ``pred_spans`` (Q×2 character span of the caption each box is tied to, -1 = none),
    ``pred_phrases`` (the text of those spans), and ``scores_refexp`` (with the is-final head) and
    ``pred_masks`` (segmentation models).
    """
    probs = outputs["pred_logits"][index].float().softmax(-1)
    scores = 1 - probs[:, -1]
    inst = Instances(tuple(orig_size))
    inst.pred_boxes = Boxes(scale_boxes(outputs["pred_boxes"][index].float(), orig_size))
    inst.scores = scores
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.long, device=scores.device)
    inst.token_probs = probs
    tokenized = outputs["tokenized"]
    spans = tied_spans(probs[:, :-1], tokenized, index)
    inst.pred_spans = spans.to(scores.device)
    inst.pred_phrases = np.array([caption[b:e] if b >= 0 else "" for b, e in spans.tolist()], dtype=object)
    if "pred_isfinal" in outputs:
        inst.scores_refexp = scores * outputs["pred_isfinal"][index, :, 0].float().sigmoid()
    if "pred_masks" in outputs:
        inst.pred_masks = upsample_masks(outputs["pred_masks"][index].float(), padded_size, image_size,
                                         orig_size, mask_threshold)
    return inst


def grounded_results(outputs: dict, image_sizes: list[tuple[int, int]],
                     padded_size: tuple[int, int], batched_inputs: list[dict],
                     captions: list[str], mask_threshold: float = 0.5, qa_head: str = "none",
                     qa_vocab: dict | None = None) -> list[dict]:
    """Per-image results of a grounded batch: ``{"instances"[, "qa"]}`` for input ``i``.

    Args:
        outputs: the raw outputs of the batch (with ``tokenized``).
        image_sizes: ``(h, w)`` of each image in the padded batch (the network input).
        padded_size: ``(H, W)`` of the padded batch.
        batched_inputs: the inputs; their ``height``/``width`` (default: the image size) are the
            original size results are scaled to.
        captions: the caption of each input.
        mask_threshold: sigmoid threshold of the predicted masks.
        qa_head: MODEL.MDETR.QA_HEAD ("none" = no answers).
        qa_vocab: the answer vocabulary of :func:`qa_answer`.
    """
    results = []
    for i, x in enumerate(batched_inputs):
        size = (x.get("height", image_sizes[i][0]), x.get("width", image_sizes[i][1]))
        result = {"instances": detections_to_instances(outputs, i, size, image_sizes[i],
                                                       padded_size, captions[i], mask_threshold)}
        if qa_head != "none":
            result["qa"] = qa_answer(outputs, i, qa_head, qa_vocab)
        results.append(result)
    return results


def class_prompt_results(prompts, chunk_outputs, orig_size: tuple[int, int], top_k: int
                         ) -> dict[str, Instances]:
    """Class-prompt results of one image from the raw outputs of each prompt chunk.

    Args:
        prompts: the :class:`ClassPrompts` the chunks come from.
        chunk_outputs: ``(pred_logits, pred_boxes)`` of each chunk of ``prompts.chunks``, in order.
        orig_size, top_k: as :func:`class_detections_to_instances`.
    """
    parts = [prompts.read(chunk, logits, boxes)
             for chunk, (logits, boxes) in zip(prompts.chunks, chunk_outputs, strict=True)]
    boxes, scores, spans = (torch.cat(p) for p in zip(*parts))
    return class_detections_to_instances(boxes, scores, spans, prompts, orig_size, top_k)


def class_detections_to_instances(boxes: torch.Tensor, scores: torch.Tensor, spans: torch.Tensor,
                                  prompts, orig_size: tuple[int, int], top_k: int
                                  ) -> dict[str, Instances]:
    """Class-prompt detections of one image as ``{"instances", "all_instances"}`` (original pixels).

    Args:
        boxes, scores, spans: every detection's normalised cxcywh box, score and global span id (see
            :meth:`ClassPrompts.read`).
        prompts: the :class:`ClassPrompts` the spans refer to.
        orig_size: ``(h, w)`` of the original image.
        top_k: detections kept in ``instances``, best scores first (0 = all).

    ``all_instances``: every detection with ``pred_boxes``, ``scores`` and ``pred_classes``
    (indices into the class list), in the given order. ``instances``: the ``top_k`` best, by
    decreasing score, with ``pred_spans`` (the class name's ``[begin, end)`` in its prompt) and
    ``pred_phrases`` (its text) too.
    """
    every = Instances(tuple(orig_size))
    every.pred_boxes = Boxes(scale_boxes(boxes, orig_size))
    every.scores = scores
    span_ids = spans.cpu()
    every.pred_classes = prompts.span_class[span_ids].to(scores.device)
    if 0 < top_k < len(scores):
        keep = scores.topk(top_k).indices
    else:
        keep = scores.argsort(descending=True, stable=True)
    best = every[keep]
    kept = span_ids[keep.cpu()]
    best.pred_spans = prompts.span_chars[kept].to(scores.device)
    best.pred_phrases = np.array([prompts.span_text[i] for i in kept.tolist()], dtype=object)
    return {"instances": best, "all_instances": every}


def qa_answer(outputs: dict, index: int, qa_head: str, vocab: dict | None = None) -> dict:
    """The predicted answer of image ``index``: ``{"answer", "answer_type", "confidence"}`` (§4.6).

    ``answer`` is a string when it can be (CLEVR always; GQA with a vocabulary ``{type: {id: answer}}``
    that has the predicted id), else the class id. ``qa_head``: MODEL.MDETR.QA_HEAD.
    """
    if qa_head == "gqa_single":
        probs = outputs["pred_answer"][index].float().softmax(-1)
        conf, idx = probs.max(0)
        answer = vocab["all"].get(int(idx), int(idx)) if vocab else int(idx)
        return {"answer": answer, "answer_type": "all", "confidence": float(conf)}
    type_probs = outputs["pred_answer_type"][index].float().softmax(-1)
    type_conf, type_idx = type_probs.max(0)
    if qa_head == "gqa":
        answer_type = GQA_ANSWER_TYPES[int(type_idx)]
        probs = outputs[f"pred_answer_{ANSWER_KEY[answer_type]}"][index].float().softmax(-1)
        conf, idx = probs.max(0)
        answer = vocab[answer_type].get(int(idx), int(idx)) if vocab else int(idx)
    elif qa_head == "clevr":
        answer_type = CLEVR_ANSWER_TYPES[int(type_idx)]
        logits = outputs[f"pred_answer_{ANSWER_KEY[answer_type]}"][index].float()
        if answer_type == "binary":
            p_yes = logits.sigmoid()
            answer, conf = ("yes", p_yes) if p_yes > 0.5 else ("no", 1 - p_yes)
        else:
            conf, idx = logits.softmax(-1).max(0)
            answer = CLEVR_ATTRIBUTES[int(idx)] if answer_type == "attribute" else str(int(idx))
    else:
        raise ValueError(f"unknown QA head {qa_head!r}")
    return {"answer": answer, "answer_type": answer_type, "confidence": float(type_conf * conf)}
