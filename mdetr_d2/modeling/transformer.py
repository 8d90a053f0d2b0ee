"""MDETR's cross-encoder and decoder (reference §1.8-1.10), batch-first, on ``scaled_dot_product_attention``.

Parameter names follow ``nn.MultiheadAttention`` and the official layers (``in_proj_weight``,
``cross_attn_image``, ``norm1/norm3/norm4``) so official checkpoints load without reshaping.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn
from torch.utils.checkpoint import checkpoint


class MultiheadAttention(nn.Module):
    """Multi-head attention with packed q/k/v projections, computed with SDPA.

    State-dict compatible with ``nn.MultiheadAttention`` (``in_proj_weight`` rows ordered q, k, v).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` B×Nq×D, ``key``/``value`` B×Nk×D, ``key_padding_mask`` B×Nk (True = ignore)."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        attn_mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)


class _FeedForwardMixin:
    """The position-wise FFN, with the official parameter names directly on the layer."""

    def _init_ffn(self, dim: int, hidden: int, dropout: float) -> None:
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(_FeedForwardMixin, nn.Module):
    """Post-norm self-attention layer over the concatenated image and text tokens."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, dropout)
        self._init_ffn(dim, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, padding_mask)))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(_FeedForwardMixin, nn.Module):
    """Post-norm decoder layer: query self-attention, then attention over image *and* text memory."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, num_heads, dropout)
        # Named after the official module; it attends to the full memory (image + text tokens).
        self.cross_attn_image = MultiheadAttention(dim, num_heads, dropout)
        self._init_ffn(dim, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.dropout4 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                memory_padding_mask: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt)))
        attn = self.cross_attn_image(tgt + query_pos, memory + memory_pos, memory, memory_padding_mask)
        tgt = self.norm3(tgt + self.dropout3(attn))
        return self.norm4(tgt + self.dropout4(self.ffn(tgt)))


def _clones(layer: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(n))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: EncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.gradient_checkpointing = False

    def forward(self, src: torch.Tensor, padding_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                src = checkpoint(layer, src, padding_mask, pos, use_reentrant=False)
            else:
                src = layer(src, padding_mask, pos)
        return src  # no final norm in MDETR's post-norm encoder (reference §1.9)


class TransformerDecoder(nn.Module):
    def __init__(self, layer: DecoderLayer, num_layers: int, dim: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                memory_padding_mask: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        """Returns the shared-norm output of every layer, ``num_layers×B×Q×D``."""
        intermediate = []
        for layer in self.layers:
            args = (tgt, query_pos, memory, memory_padding_mask, memory_pos)
            if self.gradient_checkpointing and self.training:
                tgt = checkpoint(layer, *args, use_reentrant=False)
            else:
                tgt = layer(*args)
            intermediate.append(self.norm(tgt))
        return torch.stack(intermediate)


class Transformer(nn.Module):
    """Cross-encoder + decoder with MDETR's initialisation (Xavier on every matrix)."""

    @configurable
    def __init__(self, dim: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 2048, dropout: float = 0.1,
                 gradient_checkpointing: bool = False):
        """
        Args:
            gradient_checkpointing: recompute each layer's activations in the backward pass.
        """
        super().__init__()
        self.dim = dim
        self.encoder = TransformerEncoder(
            EncoderLayer(dim, num_heads, dim_feedforward, dropout), num_encoder_layers
        )
        self.decoder = TransformerDecoder(
            DecoderLayer(dim, num_heads, dim_feedforward, dropout), num_decoder_layers, dim
        )
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.set_gradient_checkpointing(gradient_checkpointing)

    @classmethod
    def from_config(cls, cfg) -> dict:
        m = cfg.MODEL.MDETR
        return {
            "dim": m.HIDDEN_DIM,
            "num_heads": m.NHEADS,
            "num_encoder_layers": m.ENC_LAYERS,
            "num_decoder_layers": m.DEC_LAYERS,
            "dim_feedforward": m.DIM_FEEDFORWARD,
            "dropout": m.DROPOUT,
            "gradient_checkpointing": m.GRADIENT_CHECKPOINTING,
        }

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.encoder.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled
