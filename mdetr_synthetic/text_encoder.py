"""A small local text encoder for the synthetic world: byte-level BPE + random-init RoBERTa.

The folder written here stands in for ``roberta-base`` (reference §1.6) with no download: it loads
with ``AutoTokenizer.from_pretrained(folder)`` as a *fast* RoBERTa tokenizer (MDETR needs its
character offsets) and with ``AutoModel.from_pretrained(folder)``, so
``MODEL.MDETR.TEXT_ENCODER.NAME = <folder>`` works.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel, RobertaTokenizerFast

logger = logging.getLogger(__name__)

# RoBERTa's special tokens, in its id order: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4 (§1.6).
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_caption_tokenizer(captions: Iterable[str], folder: str | os.PathLike,
                            vocab_size: int = 1000, model_max_length: int = 128
                            ) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``captions`` and save it in ``folder`` as a fast RoBERTa tokenizer.

    The settings are roberta-base's (§1.6): no prefix space, offsets trimmed of the leading space.
    The byte-level alphabet is complete, so text outside the captions still tokenizes (into smaller
    pieces).

    Returns:
        the tokenizer reloaded from ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(list(captions), vocab_size=vocab_size, min_frequency=1,
                            show_progress=False, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(folder))  # vocab.json + merges.txt
    # Reload through transformers (which adds RoBERTa's <s> ... </s> post-processor and the
    # special-token roles) and save again: the folder also gets tokenizer.json and
    # tokenizer_config.json.
    tokenizer = RobertaTokenizerFast.from_pretrained(str(folder), add_prefix_space=False,
                                                     trim_offsets=True,
                                                     model_max_length=model_max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_text_encoder_folder(folder: str | os.PathLike, captions: Iterable[str], seed: int = 0,
                              hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                              intermediate_size: int | None = None,
                              max_position_embeddings: int = 130, vocab_size: int = 1000) -> Path:
    """Write a tokenizer trained on ``captions`` and a random-init ``RobertaModel`` into ``folder``.

    Args:
        folder: output folder (created); afterwards a valid ``TEXT_ENCODER.NAME``.
        captions: training text for the tokenizer (include every word the model should see whole).
        seed: seeds the weight initialisation (the global torch RNG is left untouched).
        hidden_size, num_layers, num_heads, intermediate_size: RoBERTa size (intermediate
            defaults to 4 x hidden).
        max_position_embeddings: RoBERTa's position table; captions may have up to this minus 2
            tokens (positions start after the padding index).
        vocab_size: upper bound of the BPE vocabulary.

    Returns:
        the folder.

    Raises:
        ValueError: when a caption is too long for ``max_position_embeddings``.
    """
    folder = Path(folder)
    captions = list(captions)
    tokenizer = train_caption_tokenizer(captions, folder, vocab_size=vocab_size,
                                        model_max_length=max_position_embeddings - 2)
    longest = max((len(ids) for ids in tokenizer(captions)["input_ids"]), default=0)
    if longest > max_position_embeddings - 2:
        raise ValueError(f"a caption has {longest} tokens; max_position_embeddings="
                         f"{max_position_embeddings} allows {max_position_embeddings - 2}")
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RobertaModel(config, add_pooling_layer=True)
    model.save_pretrained(str(folder))
    logger.info("text encoder in %s: %d tokens, hidden %d, %d layers, longest caption %d tokens",
                folder, len(tokenizer), hidden_size, num_layers, longest)
    return folder

