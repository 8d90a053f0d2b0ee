"""MDETR's training losses (reference §3).

Soft-token prediction, boxes, contrastive alignment, masks, "is final", question answering and the
global image-text contrastive loss, on the final decoder layer and (each with its own matching) on
every auxiliary layer.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from ..structures.qa import QA_ANSWER_KEYS
from ..structures.spans import span_to_token_range, tensor_to_spans
from .matcher import HungarianMatcher, binary_positive_map
from .qa_criterion import collate_answers, qa_losses, qa_weight_dict

__all__ = ["MDETRCriterion", "check_outputs_finite"]

logger = logging.getLogger(__name__)

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def check_outputs_finite(outputs: dict) -> None:
    """Raise ``FloatingPointError`` naming the iteration and every non-finite model output.

    Run before matching: a diverged model (huge learning rate, no clipping) would otherwise fail in
    scipy's assignment ("matrix contains invalid numeric entries") without saying where or when.
    """
    named = [(k, v) for k, v in outputs.items() if torch.is_tensor(v) and v.is_floating_point()]
    for i, aux in enumerate(outputs.get("aux_outputs", ())):
        named += [(f"aux_outputs[{i}].{k}", v) for k, v in aux.items()
                  if torch.is_tensor(v) and v.is_floating_point()]
    if not named:
        return
    finite = torch.stack([v.detach().isfinite().all() for _, v in named]).tolist()
    bad = [name for (name, _), ok in zip(named, finite) if not ok]
    if bad:
        try:
            iteration = get_event_storage().iter
        except AssertionError:  # no EventStorage: called outside a trainer
            iteration = "unknown"
        raise FloatingPointError(
            f"Model outputs became infinite or NaN at iteration={iteration}: non-finite "
            f"output(s) {bad}; the predictions cannot be matched to the targets (training "
            "diverged: lower the learning rate or clip gradients, SOLVER.CLIP_MAX_NORM)"
        )


class MDETRCriterion(nn.Module):
    """All MDETR losses, unweighted, under the official key names.

    ``forward`` returns losses (``loss_*``, ``contrastive_loss``) and logged metrics
    (``cardinality_error``, ``accuracy_*``) in one dict; auxiliary decoder layers add copies
    suffixed ``_0 .. _{k-1}``. ``weight_dict`` maps every loss key this criterion can return to
    its weight, so a model returns
    ``{k: v * weight_dict[k] for k, v in losses.items() if k in weight_dict}`` to Detectron2's
    trainer (which sums every value) and logs the rest.

    Every detection loss is normalised by ``N_boxes``: the number of target boxes in the batch,
    averaged over processes and clamped to ≥ 1 (reference §3.3, §9.2.15).
    """

    @configurable
    def __init__(
        self,
        *,
        matcher: nn.Module,
        num_aux_layers: int = 0,
        eos_coef: float = 0.1,
        temperature: float = 0.07,
        contrastive_align_loss: bool = True,
        contrastive_loss: bool = False,
        masks: bool = False,
        predict_final: bool = False,
        qa_head: str = "none",
        detection: bool = True,
        official_contrastive_fallback: bool = False,
        ce_loss_coef: float = 1.0,
        bbox_loss_coef: float = 5.0,
        giou_loss_coef: float = 2.0,
        contrastive_align_loss_coef: float = 1.0,
        contrastive_loss_coef: float = 0.1,
        mask_loss_coef: float = 1.0,
        dice_loss_coef: float = 1.0,
        isfinal_loss_coef: float = 1.0,
        qa_loss_coef: float = 1.0,
    ):
        """
        Args:
            matcher: query-to-target matcher (``HungarianMatcher``), run on every supervised layer.
            num_aux_layers: auxiliary decoder layers supervised (``dec_layers - 1`` with aux
                loss, else 0); it only sizes ``weight_dict``, the losses follow
                ``outputs["aux_outputs"]``.
            eos_coef: weight of the soft-token loss of unmatched ("no object") queries.
            temperature: temperature of the contrastive-align and global contrastive logits.
            contrastive_align_loss: compute ``loss_contrastive_align`` (needs ``proj_queries``,
                ``proj_tokens``).
            contrastive_loss: compute the global image-text ``contrastive_loss`` (needs
                ``img_pooled``, ``text_pooled``), once, on the final outputs.
            masks: compute ``loss_mask`` (focal) and ``loss_dice`` on the final layer (needs
                ``pred_masks`` and target ``masks``).
            predict_final: compute ``loss_isfinal`` / ``accuracy_isfinal`` (needs ``pred_isfinal``
                and target ``isfinal``).
            qa_head: ``"none"``, ``"gqa"``, ``"gqa_single"`` or ``"clevr"``: which QA losses to add.
            detection: compute the detection losses (matching, soft tokens, boxes, contrastive
                alignment, masks, is-final). False is the official ``--no_detection``: only the QA
                (and global contrastive) losses, for question-only data such as CLEVR-Humans.
            official_contrastive_fallback: find the contrastive-align token positions with the
                official span lookup, whose whitespace fallbacks read caption 0 of the batch
                (reference §3.5); only for parity with official numbers. Off: the positions come
                from each target's positive map (the per-caption lookup).
            ce_loss_coef, bbox_loss_coef, giou_loss_coef, contrastive_align_loss_coef,
            contrastive_loss_coef, mask_loss_coef, dice_loss_coef, isfinal_loss_coef, qa_loss_coef:
                loss weights (reference §3.11).
        """
        super().__init__()
        if qa_head not in QA_ANSWER_KEYS:
            raise ValueError(
                f"unknown QA head {qa_head!r}; expected one of {sorted(QA_ANSWER_KEYS)}"
            )
        if not detection and qa_head == "none" and not contrastive_loss:
            raise ValueError(
                "MODEL.MDETR.NO_DETECTION leaves no loss to train: set MODEL.MDETR.QA_HEAD"
            )
        self.matcher = matcher
        self.detection = detection
        self.eos_coef = eos_coef
        self.temperature = temperature
        self.contrastive_align_loss = contrastive_align_loss
        self.contrastive_loss = contrastive_loss
        self.masks = masks
        self.predict_final = predict_final
        self.qa_head = qa_head
        self.official_contrastive_fallback = official_contrastive_fallback

        layer_weights = {
            "loss_ce": ce_loss_coef,
            "loss_bbox": bbox_loss_coef,
            "loss_giou": giou_loss_coef,
        }
        if contrastive_align_loss:
            layer_weights["loss_contrastive_align"] = contrastive_align_loss_coef
        if predict_final:
            layer_weights["loss_isfinal"] = isfinal_loss_coef
        weight_dict = dict(layer_weights) if detection else {}
        if masks and detection:  # final layer only (reference §3.7)
            weight_dict.update(loss_mask=mask_loss_coef, loss_dice=dice_loss_coef)
        if contrastive_loss:  # once per batch (reference §3.6)
            weight_dict["contrastive_loss"] = contrastive_loss_coef
        # QA losses: once per batch, never per auxiliary layer (reference §3.10).
        weight_dict.update(qa_weight_dict(qa_head, qa_loss_coef))
        for i in range(num_aux_layers if detection else 0):
            weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})
        self.weight_dict: dict[str, float] = weight_dict

    @classmethod
    def from_config(cls, cfg) -> dict:
        m = cfg.MODEL.MDETR
        return {
            "matcher": HungarianMatcher(cfg),
            "num_aux_layers": m.DEC_LAYERS - 1 if m.AUX_LOSS else 0,
            "eos_coef": m.EOS_COEF,
            "temperature": m.TEMPERATURE,
            "contrastive_align_loss": m.CONTRASTIVE_ALIGN_LOSS,
            "contrastive_loss": m.CONTRASTIVE_LOSS,
            "masks": m.MASKS,
            "predict_final": m.PREDICT_FINAL,
            "qa_head": m.QA_HEAD,
            "detection": not m.NO_DETECTION,
            "official_contrastive_fallback": m.OFFICIAL_CONTRASTIVE_FALLBACK,
            "ce_loss_coef": m.CE_LOSS_COEF,
            "bbox_loss_coef": m.BBOX_LOSS_COEF,
            "giou_loss_coef": m.GIOU_LOSS_COEF,
            "contrastive_align_loss_coef": m.CONTRASTIVE_ALIGN_LOSS_COEF,
            "contrastive_loss_coef": m.CONTRASTIVE_LOSS_COEF,
            "mask_loss_coef": m.MASK_LOSS_COEF,
            "dice_loss_coef": m.DICE_LOSS_COEF,
            "isfinal_loss_coef": m.ISFINAL_LOSS_COEF,
            "qa_loss_coef": m.QA_LOSS_COEF,
        }

    # ------------------------------------------------------------------ entry point

    def forward(
        self, outputs: dict, targets: list[dict], answers: dict | None = None
    ) -> dict[str, torch.Tensor]:
        """Compute every enabled loss.

        Args:
            outputs: the model outputs in the official layout: ``pred_logits`` (B×Q×256),
                ``pred_boxes`` (B×Q×4, normalized cxcywh), optional ``aux_outputs`` (list of dicts
                with the same per-layer keys), ``proj_queries``/``proj_tokens``/``tokenized``
                (contrastive align; aux layers fall back to the top-level ``proj_tokens`` and
                ``tokenized``), ``pred_isfinal``, ``pred_masks`` (B×Q×h×w), ``pred_answer_*``,
                ``img_pooled``/``text_pooled``.
            targets: one dict per image: ``boxes`` (n×4 normalized cxcywh), ``positive_map``
                (n×256, treated as binary), ``tokens_positive`` (per box, the ``[beg, end)``
                character spans: lists, or the mapper's padded ``n×S×2`` tensor; read only by the
                official fallback lookup), and as needed ``masks`` (n×H_i×W_i, unpadded) and
                ``isfinal`` (n).
            answers: batched QA answers (the official collated dict); when None they are stacked
                from the targets' ``answer*`` entries.

        Returns:
            Unweighted losses and metrics, keyed as in the official code.
        """
        losses: dict[str, torch.Tensor] = {}
        if self.detection:
            losses.update(self._detection_losses(outputs, targets))

        if self.contrastive_loss:
            losses["contrastive_loss"] = self.loss_global_contrastive(outputs)
        if self.qa_head != "none":
            if answers is None:
                answers = collate_answers(targets, self.qa_head)
            losses.update(qa_losses(outputs, answers, self.qa_head))
        return losses

    def _detection_losses(self, outputs: dict, targets: list[dict]) -> dict:
        """Matching and the per-layer losses of the final and auxiliary decoder layers."""
        check_outputs_finite(outputs)
        num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)
        indices = self.matcher(outputs, targets)
        losses = self._layer_losses(outputs, outputs, targets, indices, num_boxes)
        if self.masks:
            losses.update(self.loss_masks(outputs, targets, indices, num_boxes))
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            layer = self._layer_losses(aux, outputs, targets, self.matcher(aux, targets), num_boxes)
            losses.update({f"{k}_{i}": v for k, v in layer.items()})
        return losses

    def _layer_losses(
        self,
        layer: dict,
        outputs: dict,
        targets: list[dict],
        indices: Indices,
        num_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Losses of one supervised decoder layer (``outputs`` supplies the shared entries)."""
        device = layer["pred_logits"].device
        batch_idx, src_idx, tgt_idx = self._flatten_indices(indices, targets, device)
        matched = (batch_idx, src_idx)
        losses = self.loss_labels(layer, targets, matched, tgt_idx, num_boxes)
        losses.update(self.loss_boxes(layer, targets, matched, tgt_idx, num_boxes))
        losses.update(self.loss_cardinality(layer, targets))
        if self.predict_final:
            losses.update(self.loss_isfinal(layer, targets, matched, tgt_idx, num_boxes))
        if self.contrastive_align_loss:
            shared = {
                k: layer.get(k, outputs.get(k))
                for k in ("proj_queries", "proj_tokens", "tokenized")
            }
            losses.update(
                self.loss_contrastive_align(shared, targets, indices, matched, tgt_idx, num_boxes)
            )
        return losses

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _num_boxes(targets: list[dict], device: torch.device) -> torch.Tensor:
        """Target boxes of the batch, averaged over processes, clamped to ≥ 1 (0-d, no sync)."""
        num_boxes = torch.as_tensor(
            float(sum(len(t["boxes"]) for t in targets)), dtype=torch.float32, device=device
        )
        world_size = comm.get_world_size()
        if world_size > 1:
            torch.distributed.all_reduce(num_boxes)
        return torch.clamp(num_boxes / world_size, min=1)

    @staticmethod
    def _flatten_indices(
        indices: Indices, targets: list[dict], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Matched pairs, flat: (image index, query index, index into the concatenated targets)."""
        offsets = [0]
        for target in targets[:-1]:
            offsets.append(offsets[-1] + len(target["boxes"]))
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        tgt_idx = torch.cat([tgt + offset for (_, tgt), offset in zip(indices, offsets)])
        return batch_idx.to(device), src_idx.to(device), tgt_idx.to(device)

    # ------------------------------------------------------------------ losses

    def loss_labels(self, layer, targets, matched, tgt_idx, num_boxes) -> dict[str, torch.Tensor]:
        """Soft-token prediction (reference §3.3).

        Cross-entropy against the binary positive-map row (a sum over its tokens) for matched
        queries, against the no-object slot, weighted ``eos_coef``, for the others.
        """
        logits = layer["pred_logits"]
        log_prob = logits.log_softmax(-1)
        pmap = binary_positive_map(targets, logits.shape[-1], logits.device)
        target = torch.zeros_like(log_prob)
        target[..., -1] = 1
        target[matched] = pmap[tgt_idx].to(target.dtype)
        weight = torch.full(
            log_prob.shape[:2], self.eos_coef, dtype=log_prob.dtype, device=logits.device
        )
        weight[matched] = 1
        loss_ce = -(log_prob * target).sum(-1) * weight
        return {"loss_ce": loss_ce.sum() / num_boxes}

    def loss_boxes(self, layer, targets, matched, tgt_idx, num_boxes) -> dict[str, torch.Tensor]:
        """L1 and GIoU on matched pairs, normalized cxcywh (reference §3.4)."""
        pred = layer["pred_boxes"][matched]
        tgt = torch.cat([t["boxes"] for t in targets]).to(pred)[tgt_idx]
        loss_bbox = F.l1_loss(pred, tgt, reduction="none").sum()
        giou = torch.diag(
            generalized_box_iou(
                box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
            )
        )
        return {"loss_bbox": loss_bbox / num_boxes, "loss_giou": (1 - giou).sum() / num_boxes}

    @torch.no_grad()
    def loss_cardinality(self, layer, targets) -> dict[str, torch.Tensor]:
        """Logged only: |#queries not predicting no-object − #targets|, averaged over images."""
        logits = layer["pred_logits"]
        predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        expected = torch.as_tensor([float(len(t["boxes"])) for t in targets], device=logits.device)
        return {"cardinality_error": F.l1_loss(predicted, expected)}

    @staticmethod
    def _isfinal_of(index: int, target: dict) -> torch.Tensor:
        """A target's is-final flags; a target without boxes has none (e.g. a question without
        boxes in a batch of CLEVR-Ref+ expressions)."""
        if "isfinal" in target:
            return target["isfinal"]
        if len(target["boxes"]) == 0:
            return target["boxes"].new_zeros(0)
        raise KeyError(
            f"target {index} of the batch has {len(target['boxes'])} boxes but no 'isfinal' flags "
            "(MODEL.MDETR.PREDICT_FINAL needs an 'isfinal' on every annotation)"
        )

    def loss_isfinal(self, layer, targets, matched, tgt_idx, num_boxes) -> dict[str, torch.Tensor]:
        """CLEVR-Ref+ "is final" BCE on matched queries, and its accuracy (reference §3.8)."""
        pred = layer["pred_isfinal"][matched].squeeze(-1)
        tgt = torch.cat([self._isfinal_of(i, t) for i, t in enumerate(targets)]).to(pred)[tgt_idx]
        loss = F.binary_cross_entropy_with_logits(pred, tgt, reduction="none").sum() / num_boxes
        with torch.no_grad():
            correct = ((pred.sigmoid() > 0.5) == (tgt > 0.5)).float()
            accuracy = correct.mean() if correct.numel() else torch.ones((), device=pred.device)
        return {"loss_isfinal": loss, "accuracy_isfinal": accuracy}

    def _contrastive_positives(
        self, shape: tuple[int, int, int], tokenized, targets, indices, matched, tgt_idx, device
    ) -> torch.Tensor:
        """Boolean ``B×Q×L`` map: query ``q`` of image ``b`` ↔ the tokens of its matched target."""
        if not self.official_contrastive_fallback:
            # Each target's tokens are its positive-map row (per-caption char_to_token, fallbacks on
            # the right caption), cut or zero-padded to the batch length L.
            length = shape[-1]
            pmap = binary_positive_map(targets, length, device) > 0
            positives = torch.zeros(shape, dtype=torch.bool, device=device)
            positives[matched] = pmap[tgt_idx]
            return positives
        # Official lookup, CPU-side (Python loop over spans), then moved in one copy.
        positives = torch.zeros(shape, dtype=torch.bool)
        for i, ((src, tgt), target) in enumerate(zip(indices, targets)):
            spans_of = (
                target["tokens_positive"] if "tokens_positive" in target else target["tokens"]
            )
            if torch.is_tensor(spans_of):  # the mapper's padded span tensor
                spans_of = tensor_to_spans(spans_of)
            for query, target_index in zip(src.tolist(), tgt.tolist()):
                for beg, end in spans_of[target_index]:
                    # The whitespace fallbacks read caption 0 of the batch (reference §3.5).
                    token_range = span_to_token_range(tokenized, beg, end, i, fallback_caption=0)
                    if token_range is not None:
                        positives[i, query, token_range[0] : token_range[1] + 1] = True
        return positives.to(device, non_blocking=True)

    def loss_contrastive_align(
        self, layer, targets, indices, matched, tgt_idx, num_boxes
    ) -> dict[str, torch.Tensor]:
        """Symmetric InfoNCE between matched queries and their tokens (reference §3.5).

        Logits over all L positions of the padded batch (special and padding tokens included, as
        officially), in fp32. Object→token: for each query with positives, −mean positive logit +
        logsumexp over tokens; token→object likewise over queries; the two sums averaged, / N_boxes.
        """
        queries, tokens = layer["proj_queries"], layer["proj_tokens"]
        with torch.autocast(device_type=queries.device.type, enabled=False):
            logits = queries.float() @ tokens.float().transpose(-1, -2) / self.temperature  # B×Q×L
            positives = self._contrastive_positives(
                logits.shape, layer["tokenized"], targets, indices, matched, tgt_idx, logits.device
            )
            positive_logits = logits.masked_fill(~positives, 0)

            def one_direction(dim: int) -> torch.Tensor:
                count = positives.sum(dim)
                per_row = -positive_logits.sum(dim) / (count + 1e-6) + logits.logsumexp(dim)
                return per_row.masked_fill(count == 0, 0).sum()

            loss = (one_direction(2) + one_direction(1)) / 2
        return {"loss_contrastive_align": loss / num_boxes}

    def loss_masks(self, outputs, targets, indices, num_boxes) -> dict[str, torch.Tensor]:
        """Sigmoid focal (α 0.25, γ 2, pixel mean) and dice losses of matched masks (final layer).

        Predicted mask logits are upsampled bilinearly to the batch-padded target size (targets are
        zero-padded bottom/right to the largest mask of the batch), in fp32, reference §3.7.
        """
        pred_masks = outputs["pred_masks"]
        device = pred_masks.device
        batch_idx, src_idx, tgt_idx = self._flatten_indices(indices, targets, device)
        height = max(t["masks"].shape[-2] for t in targets)
        width = max(t["masks"].shape[-1] for t in targets)
        padded = [
            F.pad(
                t["masks"].to(device=device, dtype=torch.float32),
                (0, width - t["masks"].shape[-1], 0, height - t["masks"].shape[-2]),
            )
            for t in targets
        ]
        tgt = torch.cat(padded)[tgt_idx].flatten(1)
        src = pred_masks[batch_idx, src_idx]
        if len(src) == 0:
            zero = pred_masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src = F.interpolate(
            src[:, None], size=(height, width), mode="bilinear", align_corners=False
        )
        src = src[:, 0].flatten(1).float()

        focal = sigmoid_focal_loss(src, tgt, alpha=0.25, gamma=2, reduction="none").mean(1).sum()
        prob = src.sigmoid()
        dice = 1 - (2 * (prob * tgt).sum(1) + 1) / (prob.sum(1) + tgt.sum(1) + 1)
        return {"loss_mask": focal / num_boxes, "loss_dice": dice.sum() / num_boxes}

    def loss_global_contrastive(self, outputs) -> torch.Tensor:
        """Image↔caption InfoNCE over the per-process batch (reference §3.6)."""
        img, text = outputs["img_pooled"], outputs["text_pooled"]
        with torch.autocast(device_type=img.device.type, enabled=False):
            img = F.normalize(img.float(), dim=-1)
            text = F.normalize(text.float(), dim=-1)
            logits = img @ text.T / self.temperature
            labels = torch.arange(len(logits), device=logits.device)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
