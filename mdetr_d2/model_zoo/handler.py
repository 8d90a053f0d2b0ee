"""``mdetr://<name>`` paths for Detectron2's ``PathManager``: a released checkpoint by name.

The handler only turns a name into a local file path (downloading it once); loading the file stays
with the checkpoint readers (weights-only unpickling, ``mdetr_d2.checkpoint``).
"""
from __future__ import annotations

from typing import Any

from iopath.common.file_io import PathHandler

from .catalog import get_entry
from .download import fetch_release_file

__all__ = ["MDETRZooHandler"]


class MDETRZooHandler(PathHandler):
    """Resolves ``mdetr://refcoco_resnet101`` (any name of :data:`MODEL_ZOO`) to the cached file."""

    PREFIX = "mdetr://"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        return fetch_release_file(get_entry(path[len(self.PREFIX):]).filename, force=force)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any):
        self._check_kwargs(kwargs)
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        try:
            get_entry(path[len(self.PREFIX):])
        except KeyError:
            return False
        return True
