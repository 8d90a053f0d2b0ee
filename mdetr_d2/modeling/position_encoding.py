"""2-D sine positional embedding normalised by the valid (unpadded) extent (reference §1.4)."""
from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine embedding of (y, x) cell positions; output channels are ``[PE_y ; PE_x]``.

    Positions are 1-based cumulative counts of valid cells, divided by the count at the last row/column,
    so padded cells repeat the last valid value and the embedding does not depend on the padding amount.
    """

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``mask``: ``B×H×W`` bool, True on padding. Returns ``B×(2·num_pos_feats)×H×W``."""
        valid = ~mask
        y = valid.cumsum(1, dtype=torch.float32)
        x = valid.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y = y / (y[:, -1:, :] + eps) * self.scale
        x = x / (x[:, :, -1:] + eps) * self.scale
        k = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        freq = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = self._interleave(y[..., None] / freq)
        pos_x = self._interleave(x[..., None] / freq)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(dtype)

    @staticmethod
    def _interleave(angles: torch.Tensor) -> torch.Tensor:
        # Channel 2n gets sin, 2n+1 gets cos (of the same frequency).
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)
