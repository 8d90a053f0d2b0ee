"""mdetr_d2: MDETR (modulated detection for end-to-end multi-modal understanding) for Detectron2."""
from .config import add_mdetr_config
from . import data, modeling  # noqa: F401  register the datasets, meta-architecture and backbones
from . import model_zoo  # noqa: F401  register the mdetr:// names of the released checkpoints
from . import checkpoint  # noqa: F401  the torch.load allow-list (official `args`), for all loaders

__all__ = [
    "add_mdetr_config",
]
