"""The Detectron2 installer's sdist extraction works with and without Python's extraction filters
(Debian 12's python3 is 3.11.2, which has none) and refuses members that leave the archive."""
import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("install_detectron2",
                                               REPO / "tools" / "install_detectron2.py")
installer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(installer)


def _archive(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = b"print('hi')\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("has_filters", [True, False])
def test_extracts_a_plain_sdist(tmp_path, monkeypatch, has_filters):
    if not has_filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _archive(tmp_path / "d2.tar.gz", ["detectron2-0.6/setup.py"])
    with tarfile.open(archive) as tar:
        installer._extract(tar, tmp_path / "src")
    assert (tmp_path / "src" / "detectron2-0.6" / "setup.py").read_text() == "print('hi')\n"


def test_refuses_a_member_outside_the_archive_without_filters(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = _archive(tmp_path / "d2.tar.gz", ["../escaped.py"])
    with tarfile.open(archive) as tar, pytest.raises(SystemExit, match="escaped.py"):
        installer._extract(tar, tmp_path / "src")
    assert not (tmp_path / "escaped.py").exists()
