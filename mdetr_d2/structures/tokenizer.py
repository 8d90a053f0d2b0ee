"""The text encoder's files and the caption's tokens: the fast tokenizer (shared by the mapper and
the model), the caption-length limit of the language model, and MDETR's token slots (§1.6, §3.1)."""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any, Callable

from huggingface_hub import constants
from huggingface_hub.utils import get_session
from transformers import AutoConfig, AutoTokenizer, BatchEncoding, PreTrainedTokenizerFast

__all__ = [
    "MAX_TOKEN_SLOTS",
    "NO_OBJECT_SLOT",
    "TextEncoderNotFound",
    "build_tokenizer",
    "caption_token_limit",
    "encode_caption",
    "load_pretrained",
    "max_caption_tokens",
    "tokenize_captions",
]

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
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One request to the hub endpoint, without the hub client's retries (a minute of back-off)."""
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


def load_pretrained(load: Callable[..., Any], name_or_path: str, **kwargs) -> Any:
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
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, name_or_path, use_fast=True)
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


def encode_caption(tokenizer, caption: Any, max_tokens: int | None) -> BatchEncoding:
    """Tokenize one caption (no padding, no truncation), refusing what the text encoder cannot take.

    Raises:
        ValueError: not a non-empty string, text the tokenizer cannot encode (e.g. a lone
            surrogate), or more than ``max_tokens`` tokens.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"expected a non-empty string, got {caption!r}")
    try:
        tokenized = tokenizer(caption)
    except Exception as e:  # the Rust tokenizer raises TypeError/ValueError/... on unencodable text
        raise ValueError(f"the tokenizer cannot encode it ({type(e).__name__}: {e})") from None
    length = len(tokenized["input_ids"])
    if max_tokens is not None and length > max_tokens:
        raise ValueError(
            f"{length} tokens, more than the {max_tokens} the text encoder accepts"
        )
    return tokenized

def tokenize_captions(tokenizer, captions: list[str], limit: int | None,
                      name: str) -> BatchEncoding:
    """Tokenize a batch of captions as MDETR does (``padding="longest"``, no truncation), on CPU.

    Args:
        tokenizer: the text encoder's fast tokenizer.
        limit: most tokens a caption may have (:func:`caption_token_limit`; None = no limit).
        name: the text encoder, for the error messages.

    Raises:
        ValueError: an empty caption, or one longer than ``limit`` tokens.
    """
    for i, caption in enumerate(captions):
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"caption {i} is empty: MDETR needs text to ground ({caption!r})")
    tokenized = tokenizer(list(captions), padding="longest", return_tensors="pt")
    length = tokenized["input_ids"].shape[1]
    if limit is not None and length > limit:
        raise ValueError(
            f"a caption has {length} tokens; the text encoder {name!r} accepts at most {limit}"
        )
    if length > MAX_TOKEN_SLOTS - 1:
        logger.warning(
            "a caption has %d tokens: only positions 0..%d can be predicted as soft tokens; "
            "positions %d..%d are encoded but cannot be grounded",
            length, NO_OBJECT_SLOT - 1, NO_OBJECT_SLOT, length - 1,
        )
    return tokenized
