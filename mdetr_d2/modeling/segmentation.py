"""Segmentation branch: per-query attention maps over the image memory and an FPN-like mask head
(reference §1.17). Channel counts come from the backbone (the official head hard-codes ResNet-50's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionMap(nn.Module):
    """Multi-head attention *weights* of the last decoder outputs over the image memory (no values)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.k_linear = nn.Linear(dim, dim)
        self.scale = (dim / num_heads) ** -0.5
        for layer in (self.q_linear, self.k_linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``queries`` B×Q×D, ``memory`` B×D×H×W, ``mask`` B×H×W (True = pad) -> B×Q×heads×H×W."""
        q = self.q_linear(queries)
        k = F.conv2d(memory, self.k_linear.weight[:, :, None, None], self.k_linear.bias)
        b, n, d = q.shape
        h = self.num_heads
        qh = q.view(b, n, h, d // h) * self.scale
        kh = k.view(b, h, d // h, k.shape[-2], k.shape[-1])
        logits = torch.einsum("bqnc,bnchw->bqnhw", qh, kh)
        logits = logits.masked_fill(mask[:, None, None], float("-inf"))
        # One softmax per query and head over the pixels (verified against the official outputs).
        return logits.flatten(3).softmax(-1).view_as(logits)


class MaskHead(nn.Module):
    """Conv head upsampling ``[projected stride-32 feature ; attention maps]`` with the stride-16/8/4
    backbone levels (FPN-style lateral adapters) to one mask logit map per query at stride 4."""

    def __init__(self, dim: int, num_heads: int, fpn_channels: tuple[int, int, int]):
        """
        Args:
            dim: transformer width; the head's input has ``dim + num_heads`` channels.
            fpn_channels: channels of the stride-16, -8 and -4 backbone levels.
        """
        super().__init__()
        width = dim + num_heads
        inter = [width, dim // 2, dim // 4, dim // 8, dim // 16]
        for i, c in enumerate(inter):
            if c % 8:
                raise ValueError(
                    f"mask head: GroupNorm(8) needs channels divisible by 8, layer {i + 1} has {c} "
                    f"(hidden dim {dim}, {num_heads} heads); use a hidden dim that is a multiple of 128"
                )
        self.lay1 = nn.Conv2d(width, width, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, width)
        self.lay2 = nn.Conv2d(width, inter[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, inter[1])
        self.lay3 = nn.Conv2d(inter[1], inter[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, inter[2])
        self.lay4 = nn.Conv2d(inter[2], inter[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, inter[3])
        self.lay5 = nn.Conv2d(inter[3], inter[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, inter[4])
        self.out_lay = nn.Conv2d(inter[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_channels[0], inter[1], 1)
        self.adapter2 = nn.Conv2d(fpn_channels[1], inter[2], 1)
        self.adapter3 = nn.Conv2d(fpn_channels[2], inter[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, attention: torch.Tensor, fpns: list[torch.Tensor]) -> torch.Tensor:
        """``x`` B×D×h×w, ``attention`` B×Q×heads×h×w, ``fpns`` [stride 16, 8, 4] -> B×Q×H/4×W/4."""
        b, q = attention.shape[:2]
        x = torch.cat([x.repeat_interleave(q, dim=0), attention.flatten(0, 1)], dim=1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        stages = ((self.adapter1, self.lay3, self.gn3), (self.adapter2, self.lay4, self.gn4),
                  (self.adapter3, self.lay5, self.gn5))
        for fpn, (adapter, conv, norm) in zip(fpns, stages):
            lateral = adapter(fpn).repeat_interleave(q, dim=0)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(norm(conv(x)))
        return self.out_lay(x).view(b, q, *x.shape[-2:])
