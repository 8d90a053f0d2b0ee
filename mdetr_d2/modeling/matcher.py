"""Hungarian matching between decoder queries and the boxes of each image (reference §3.2)."""

from __future__ import annotations

import torch
from detectron2.config import configurable
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "binary_positive_map"]


def binary_positive_map(
    targets: list[dict], num_classes: int, device: torch.device
) -> torch.Tensor:
    """Concatenate the per-image positive maps of ``targets`` into one binary map.

    Returns a float ``(Σ n_i)×num_classes`` tensor of 0/1. The official collate writes the
    per-sample (row-normalized) maps into a boolean tensor, so the matcher and the losses see 0/1
    targets; we binarize the same way to reproduce training (reference §3.1, §9.2.1). Maps narrower
    than ``num_classes`` are zero-padded, wider ones truncated.
    """
    rows = []
    for target in targets:
        pmap = target["positive_map"].to(device=device) > 0
        width = pmap.shape[-1]
        if width < num_classes:
            pmap = nn.functional.pad(pmap, (0, num_classes - width))
        rows.append(pmap[:, :num_classes])
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.float32, device=device)
    return torch.cat(rows).float()


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target boxes, per image, minimising

    ``cost_class · (−Σ_t softmax(logits)[q, t] · M[j, t])``
    ``+ cost_bbox · ‖b_q − b_j‖₁ − cost_giou · GIoU(b_q, b_j)``

    where ``M`` is the binary positive map of target ``j`` (the softmax includes the no-object slot)
    and boxes are normalized ``cxcywh`` (reference §3.2). Costs are computed in fp32, without
    gradients, even under autocast; the assignment is scipy's ``linear_sum_assignment``.
    """

    @configurable
    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        """
        Args:
            cost_class: weight of the soft-token (class) cost.
            cost_bbox: weight of the L1 box cost.
            cost_giou: weight of the (negative) generalized-IoU cost.
        """
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @classmethod
    def from_config(cls, cfg) -> dict:
        m = cfg.MODEL.MDETR
        return {
            "cost_class": m.SET_COST_CLASS,
            "cost_bbox": m.SET_COST_BBOX,
            "cost_giou": m.SET_COST_GIOU,
        }

    @torch.no_grad()
    def cost_matrix(self, outputs: dict, targets: list[dict]) -> torch.Tensor:
        """The ``B×Q×(Σ n_i)`` cost between every query and every target box of the batch."""
        logits = outputs["pred_logits"]
        batch_size, num_queries, num_classes = logits.shape
        device = logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            prob = logits.flatten(0, 1).float().softmax(-1)
            pred_boxes = outputs["pred_boxes"].flatten(0, 1).float()
            tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(
                device=device, dtype=torch.float32
            )
            pmap = binary_positive_map(targets, num_classes, device)
            if len(pmap) != len(tgt_boxes):
                raise ValueError(f"{len(pmap)} positive-map rows for {len(tgt_boxes)} boxes")

            cost_class = -(prob @ pmap.T)
            cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)
            cost_giou = -generalized_box_iou(
                box_convert(pred_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
            )
            cost = (
                self.cost_bbox * cost_bbox
                + self.cost_class * cost_class
                + self.cost_giou * cost_giou
            )
        return cost.view(batch_size, num_queries, -1)

    @torch.no_grad()
    def forward(
        self, outputs: dict, targets: list[dict]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match the queries of each image to its targets.

        Args:
            outputs: at least ``pred_logits`` (B×Q×K) and ``pred_boxes`` (B×Q×4, normalized cxcywh).
            targets: one dict per image with ``boxes`` (n_i×4, normalized cxcywh) and
                ``positive_map`` (n_i×K, treated as binary).

        Returns:
            Per image, ``(query_indices, target_indices)``: int64 CPU tensors of length
            ``min(Q, n_i)``, sorted by query index.
        """
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty.clone()) for _ in sizes]
        cost = self.cost_matrix(outputs, targets).cpu()
        indices = []
        for i, block in enumerate(cost.split(sizes, dim=-1)):
            if sizes[i] == 0:
                indices.append((empty, empty.clone()))
                continue
            rows, cols = linear_sum_assignment(block[i].numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}"
        )
