"""The released MDETR checkpoints by name: ``MODEL.WEIGHTS mdetr://refcoco_resnet101``.

Importing this package (``import mdetr_d2`` does) registers the ``mdetr://`` prefix with
Detectron2's ``PathManager``, so every Detectron2 path argument accepts the names:
``MODEL.WEIGHTS``, ``DetectionCheckpointer.load``, ``build_official_model``,
``tools/demo.py --official``. The file is downloaded once into the cache (``$MDETR_WEIGHTS_CACHE``,
default the Detectron2/iopath cache) from the official release (``$MDETR_WEIGHTS_URL`` to use a
mirror), and its sha256, recorded then, is checked at every later use.
"""
from detectron2.utils.file_io import PathManager

from .catalog import MODEL_ZOO, ZooEntry, get_config, get_config_file, get_entry
from .download import (
    RELEASE_URL,
    ChecksumError,
    DownloadError,
    fetch_release_file,
    weights_base_url,
    weights_cache_dir,
)
from .handler import MDETRZooHandler

PathManager.register_handler(MDETRZooHandler())

__all__ = [
    "MODEL_ZOO",
    "RELEASE_URL",
    "ChecksumError",
    "DownloadError",
    "MDETRZooHandler",
    "ZooEntry",
    "fetch_release_file",
    "get_config",
    "get_config_file",
    "get_entry",
    "weights_base_url",
    "weights_cache_dir",
]
