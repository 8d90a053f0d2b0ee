"""Registers every dataset MDETR uses under ``$MDETR_DATASETS`` (default ``./datasets``), lazily.

Imported by ``mdetr_d2.data``; registration reads no file (each loader runs when the dataset is used).
"""

from .mdetr_json import dataset_root
from .register_clevr import register_all_clevr
from .register_flickr import register_all_flickr
from .register_gqa import register_all_gqa
from .register_lvis import register_all_lvis
from .register_phrasecut import register_all_phrasecut
from .register_pretrain import register_all_pretrain
from .register_refexp import register_all_refexp


def register_all(root: str | None = None) -> None:
    """Register every family under ``root`` (default: ``dataset_root()``). Idempotent."""
    root = dataset_root() if root is None else root
    register_all_flickr(root)
    register_all_refexp(root)
    register_all_phrasecut(root)
    register_all_gqa(root)
    register_all_pretrain(root)
    register_all_lvis(root)
    register_all_clevr(root)


register_all()
