"""Parameter names of the official MDETR modules and ours (reference §2).

The model's own ``load_state_dict`` recognises the official names (a pre-hook on the
meta-architecture), so an official state dict loads through any loader, Detectron2's
``DetectionCheckpointer`` included.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping

# (official key pattern, our replacement), applied in order after the segmentation prefix is gone.
_KEY_RENAMES = (
    (re.compile(r"^backbone\.0\.body\."), "backbone.body."),
    (re.compile(r"^transformer\.text_encoder\."), "text_encoder.body."),
    (re.compile(r"^transformer\.resizer\."), "text_encoder.resizer."),
    (re.compile(r"^transformer\.CLS\."), "cls_token."),
    (re.compile(r"^(answer_\w+_head\.)"), r"qa_head.\1"),
)
# Persistent in transformers 4.5.1 (the released files were saved with it), gone from RoBERTa now.
_STALE_KEY = re.compile(r"(^|\.)text_encoder\.embeddings\.position_ids$")
# Names only the official modules have (ours are `backbone.body.`, `text_encoder.body.`).
_OFFICIAL_ONLY = ("backbone.0.", "transformer.text_encoder.", "detr.")


def has_official_names(keys: Iterable[str]) -> bool:
    """True when a state dict uses the official module names."""
    return any(k.startswith(_OFFICIAL_ONLY) for k in keys)


def official_to_our_name(key: str) -> str | None:
    """Our name for an official state-dict key; None for the stale ``position_ids`` buffer."""
    key = key.removeprefix("detr.")  # segmentation models wrap the detector as `detr`
    if _STALE_KEY.search(key):
        return None
    for pattern, replacement in _KEY_RENAMES:
        key = pattern.sub(replacement, key)
    return key


def rename_official_keys(state: MutableMapping, prefix: str = "") -> None:
    """Rename the official keys under ``prefix`` to ours in place (order kept) and drop the stale
    buffer; a state dict without official names is left as it is."""
    if not has_official_names(k[len(prefix):] for k in state if k.startswith(prefix)):
        return
    items = list(state.items())
    state.clear()
    for key, value in items:
        if key.startswith(prefix):
            ours = official_to_our_name(key[len(prefix):])
            if ours is None:
                continue
            key = prefix + ours
        state[key] = value


def official_names_pre_hook(module, state_dict, prefix, *args) -> None:
    """``load_state_dict`` pre-hook of the meta-architecture: official state dicts load as ours."""
    rename_official_keys(state_dict, prefix)
