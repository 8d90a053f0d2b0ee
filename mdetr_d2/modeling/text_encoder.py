"""Text side of MDETR: a HuggingFace RoBERTa-family encoder plus the feature resizer (reference §1.6-1.7)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from detectron2.config import configurable
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BatchEncoding, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

# Width of the soft-token output space: slots 0..254 are token positions, 255 is "no object" (§3.1).
MAX_TOKEN_SLOTS = 256
NO_OBJECT_SLOT = MAX_TOKEN_SLOTS - 1


class TextEncoderNotFound(OSError):
    """The text encoder named by MODEL.MDETR.TEXT_ENCODER.NAME cannot be loaded (no such folder,
    or a hub name that is neither cached nor downloadable)."""


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else (absolute, ``./``, ``~``, two or more
    ``/``) is meant as a local folder."""
    return name.startswith(("/", ".", "~", "$")) or name.count("/") > 1


def _resolve(name_or_path: str) -> str:
    """Expand ``~`` and environment variables for local folders; hub names pass through.

    Raises:
        TextEncoderNotFound: ``name_or_path`` is meant as a folder that does not exist.
    """
    expanded = os.path.expanduser(os.path.expandvars(name_or_path))
    if os.path.isdir(expanded):
        return expanded
    if _looks_like_path(name_or_path):
        raise TextEncoderNotFound(
            f"text encoder folder {name_or_path!r} (MODEL.MDETR.TEXT_ENCODER.NAME) does not exist "
            f"(resolved to {os.path.abspath(expanded)!r}); it should hold a fast tokenizer and the "
            "model's config (and weights)"
        )
    return name_or_path


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One request to the hub endpoint, without the hub client's retries (a minute of back-off)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # noqa: BLE001 (any failure of the HTTP stack means "not reachable")
        return False
    return True


def _not_found(name: str, reason: str) -> TextEncoderNotFound:
    return TextEncoderNotFound(
        f"text encoder {name!r} (MODEL.MDETR.TEXT_ENCODER.NAME) is neither a local folder "
        f"({os.path.abspath(name)!r} does not exist) nor in the local Hugging Face cache, and "
        f"{reason}. Download it once on a machine with network access "
        f"(e.g. `hf download {name}`, then copy ~/.cache/huggingface), or set "
        "MODEL.MDETR.TEXT_ENCODER.NAME to a local folder holding its tokenizer, config and weights."
    )


def _from_pretrained(load, name_or_path: str, **kwargs):
    """``load(name_or_path, **kwargs)`` (an HF ``from_pretrained``), failing fast with what to do.

    A local folder is loaded directly; a hub name from the cache first, then from the hub only when
    the hub answers one request: offline (``HF_HUB_OFFLINE``) or without network the error comes at
    once, naming MODEL.MDETR.TEXT_ENCODER.NAME and the local-folder alternative.

    Raises:
        TextEncoderNotFound: as above.
    """
    path = _resolve(name_or_path)
    if os.path.isdir(path):
        return load(path, **kwargs)
    try:
        return load(path, local_files_only=True, **kwargs)
    except OSError:
        pass  # not cached: try the hub below
    if _offline():
        raise _not_found(name_or_path, "Hugging Face is set offline (HF_HUB_OFFLINE=1)")
    if not _hub_reachable():
        from huggingface_hub import constants

        raise _not_found(name_or_path, f"the hub ({constants.ENDPOINT}) cannot be reached")
    try:
        return load(path, **kwargs)
    except OSError as e:
        raise _not_found(name_or_path, f"loading it from the hub failed ({e})") from e


@lru_cache(maxsize=8)
def build_tokenizer(name_or_path: str) -> PreTrainedTokenizerFast:
    """Load the fast tokenizer of a HF model name or local folder (cached: mappers and models share it).

    MDETR needs the fast tokenizer's character offsets (``char_to_token``) to turn caption spans into
    token positions, so a slow tokenizer is refused.
    """
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name_or_path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"text encoder {name_or_path!r}: MDETR needs a fast tokenizer (character offsets)")
    return tokenizer


def caption_token_limit(config) -> int | None:
    """Most tokens (special tokens included) one caption may have for a text encoder of this HF
    config, or None when the config sets no limit.

    RoBERTa-family position ids start after the padding index: two of the
    ``max_position_embeddings`` positions are never used by tokens.
    """
    max_positions = getattr(config, "max_position_embeddings", None)
    return None if max_positions is None else max_positions - 2


@lru_cache(maxsize=8)
def max_caption_tokens(name_or_path: str) -> int | None:
    """:func:`caption_token_limit` of a HF model name or local folder (reads only its config); None
    for a tokenizer without a model config (no model, no limit)."""
    try:
        config = AutoConfig.from_pretrained(_resolve(name_or_path))
    except (OSError, ValueError):
        return None
    return caption_token_limit(config)


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
            self.body = _from_pretrained(AutoModel.from_pretrained, name, add_pooling_layer=True)
        else:
            config = _from_pretrained(AutoConfig.from_pretrained, name)
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

    def tokenize(self, captions: list[str], device: torch.device):
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty: MDETR needs text to ground ({caption!r})")
        tokenized = self.tokenizer(list(captions), padding="longest", return_tensors="pt")
        length = tokenized["input_ids"].shape[1]
        limit = caption_token_limit(self.body.config)
        if limit is not None and length > limit:
            raise ValueError(
                f"a caption has {length} tokens; the text encoder {self.name!r} accepts at most "
                f"{limit}"
            )
        if length > MAX_TOKEN_SLOTS - 1:
            logger.warning(
                "a caption has %d tokens: only positions 0..%d can be predicted as soft tokens; "
                "positions %d..%d are encoded but cannot be grounded",
                length, NO_OBJECT_SLOT - 1, NO_OBJECT_SLOT, length - 1,
            )
        return tokenized.to(device)

    def forward(self, captions: list[str], device: torch.device) -> EncodedText:
        tokenized = self.tokenize(captions, device)
        out = self.body(input_ids=tokenized["input_ids"], attention_mask=tokenized["attention_mask"])
        features = self.resizer(out.last_hidden_state)
        padding_mask = tokenized["attention_mask"].ne(1)
        return EncodedText(tokenized, features, padding_mask, out.pooler_output)
