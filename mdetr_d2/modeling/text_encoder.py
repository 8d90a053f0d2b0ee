"""Text side of MDETR: a HuggingFace RoBERTa-family encoder plus the feature resizer (reference §1.6-1.7)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from detectron2.config import configurable
from torch import nn
from transformers import AutoConfig, AutoModel, BatchEncoding

from ..structures.tokenizer import (
    MAX_TOKEN_SLOTS,
    NO_OBJECT_SLOT,
    build_tokenizer,
    caption_token_limit,
    load_pretrained,
    tokenize_captions,
)

logger = logging.getLogger(__name__)



@dataclass
class EncodedText:
    """A batch of captions after the text encoder and resizer (the official "memory cache" text part).

    Attributes:
        tokenized: the tokenizer output (``input_ids``, ``attention_mask``; offsets via ``char_to_token``).
        features: ``B×L×D`` resized text features (``text_memory_resized``, batch-first).
        padding_mask: ``B×L`` bool, True on padding tokens.
        pooled: ``B×C`` pooler output of the language model (for the global contrastive loss) or None.
    """

    tokenized: object
    features: torch.Tensor
    padding_mask: torch.Tensor
    pooled: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> "EncodedText":
        """The same encodings for a new batch whose i-th caption is ``index[i]`` of this one."""
        pooled = None if self.pooled is None else self.pooled[index]
        # The tokenization follows the rows too: phrases and span lookups read it per batch index.
        rows = index.tolist()
        tokenized = BatchEncoding({k: v[index] for k, v in self.tokenized.items()},
                                  encoding=[self.tokenized.encodings[i] for i in rows])
        return EncodedText(tokenized, self.features[index], self.padding_mask[index], pooled)


class FeatureResizer(nn.Module):
    """Linear -> LayerNorm(eps 1e-12) -> Dropout: text features to the transformer width (§1.7)."""

    def __init__(self, input_dim: int, output_dim: int, dropout: float = 0.1):
        super().__init__()
        self.fc = nn.Linear(input_dim, output_dim, bias=True)
        self.layer_norm = nn.LayerNorm(output_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.fc(x)))


class TextEncoder(nn.Module):
    """Tokenizes captions, runs the language model and resizes its last hidden state.

    The language model is any HF RoBERTa-family model (by hub name or local folder). Captions are
    tokenized per batch with ``padding="longest"`` and no truncation, as the official code does.
    """

    @configurable
    def __init__(self, *, name: str, hidden_dim: int, dropout: float = 0.1, pretrained: bool = True,
                 freeze: bool = False):
        """
        Args:
            name: HF model name or local folder (tokenizer + config [+ weights]).
            hidden_dim: transformer width the features are resized to.
            dropout: dropout of the resizer.
            pretrained: load the model's weights from ``name`` (else only its config, random init).
            freeze: keep the language model's weights fixed.
        """
        super().__init__()
        self.name = name
        self.tokenizer = build_tokenizer(name)
        if pretrained:
            self.body = load_pretrained(AutoModel.from_pretrained, name, add_pooling_layer=True)
        else:
            config = load_pretrained(AutoConfig.from_pretrained, name)
            self.body = AutoModel.from_config(config, add_pooling_layer=True)
        self.resizer = FeatureResizer(self.body.config.hidden_size, hidden_dim, dropout)
        if freeze:
            self.body.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        m = cfg.MODEL.MDETR
        return {
            "name": m.TEXT_ENCODER.NAME,
            "hidden_dim": m.HIDDEN_DIM,
            "dropout": m.DROPOUT,
            "pretrained": m.TEXT_ENCODER.PRETRAINED,
            "freeze": m.TEXT_ENCODER.FREEZE,
        }

    @property
    def output_dim(self) -> int:
        return self.body.config.hidden_size

    def tokenize(self, captions: list[str], device: torch.device) -> BatchEncoding:
        return tokenize_captions(self.tokenizer, captions, caption_token_limit(self.body.config),
                                 self.name).to(device)

    def forward(self, captions: list[str], device: torch.device) -> EncodedText:
        tokenized = self.tokenize(captions, device)
        features, padding_mask, pooled = self.encode_tokens(tokenized["input_ids"],
                                                            tokenized["attention_mask"])
        return EncodedText(tokenized, features, padding_mask, pooled)

    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Resized features (B×L×D), padding mask (B×L, True = pad) and pooled output of
        tokenized captions (``input_ids`` and ``attention_mask``, B×L)."""
        out = self.body(input_ids=input_ids, attention_mask=attention_mask)
        return self.resizer(out.last_hidden_state), attention_mask.ne(1), out.pooler_output
