#!/usr/bin/env python
"""Install Detectron2 v0.6 (pure Python) into the running interpreter's environment.

Detectron2 is not on the package registry under its own name. The registry does carry an sdist,
``pb1-detectron2==0.6``, whose Python sources are identical to upstream v0.6 but which ships no C++ sources
and cannot be built as-is. This script downloads it, applies the small patches that make it import and run
with current torch / NumPy / Pillow / setuptools (see ``../shared/ENVIRONMENT.md`` for why each one is
needed), and installs it under the distribution name ``detectron2``.

Every patch asserts that its target text is present, so a changed sdist fails loudly instead of
installing a half-patched package. torch must already be installed (the sdist's setup.py imports it).

Usage: ``python tools/install_detectron2.py [--force]``
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"

# (file relative to the source root, old text, new text). Each old text must occur at least once.
_PATCHES: list[tuple[str, str, str]] = [
    ("detectron2/layers/rotated_boxes.py", "from detectron2 import _C\n",
     "try:\n    from detectron2 import _C\nexcept ImportError:  # built without the C++ extension\n    _C = None\n"),
    ("detectron2/layers/deform_conv.py", "from detectron2 import _C\n",
     "try:\n    from detectron2 import _C\nexcept ImportError:  # built without the C++ extension\n    _C = None\n"),
    ("detectron2/layers/roi_align_rotated.py", "from detectron2 import _C\n",
     "try:\n    from detectron2 import _C\nexcept ImportError:  # built without the C++ extension\n    _C = None\n"),
    ("detectron2/evaluation/coco_evaluation.py",
     "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
     "try:\n    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
     "except ImportError:  # no C++ extension: pycocotools' COCOeval gives the same numbers\n"
     "    COCOeval_opt = COCOeval\n"),
    ("detectron2/data/transforms/transform.py", "Image.LINEAR", "Image.BILINEAR"),
    ("detectron2/model_zoo/model_zoo.py",
     "    cfg_file = pkg_resources.resource_filename(\n"
     "        \"detectron2.model_zoo\", os.path.join(\"configs\", config_path)\n    )\n",
     "    cfg_file = os.path.join(os.path.dirname(__file__), \"configs\", config_path)\n"),
    ("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n", ""),
    ("detectron2/export/__init__.py", "from .api import *\n",
     "try:\n    from .api import *\nexcept ImportError:  # the caffe2 exporter needs caffe2, absent from torch 2\n"
     "    pass\n"),
]

_NUMPY_ALIAS = re.compile(r"\bnp\.(bool|int|float|str|object)\b(?!_)")


def _patch_setup_py(text: str) -> str:
    """No extension to build, the `detectron2` name, config files as package data, no black pin."""
    edits = [
        (r"ext_modules=get_extensions\(\),", "ext_modules=[],"),
        (r'name="pb1-detectron2",', 'name="detectron2",'),
        (r'package_data=\{"detectron2.model_zoo": get_model_zoo_configs\(\)\},',
         'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},'),
        (r'\s*"black==21\.4b2",', ""),
    ]
    for pattern, repl in edits:
        text, count = re.subn(pattern, repl, text)
        if count == 0:
            raise RuntimeError(f"setup.py patch target not found: {pattern}")
    return text


def patch_sources(root: Path) -> None:
    setup = root / "setup.py"
    setup.write_text(_patch_setup_py(setup.read_text()))
    for rel, old, new in _PATCHES:
        path = root / rel
        text = path.read_text()
        if old not in text:
            raise RuntimeError(f"{rel}: patch target not found: {old!r}")
        path.write_text(text.replace(old, new))
    for path in (root / "detectron2").rglob("*.py"):
        text = path.read_text()
        new = _NUMPY_ALIAS.sub(lambda m: m.group(1), text)
        if new != text:
            path.write_text(new)


def _installed() -> bool:
    return importlib.util.find_spec("detectron2") is not None


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract an sdist, refusing members that would land outside ``dest`` or are links/devices.

    Python 3.11 before 3.11.4 (e.g. Debian 12's python3) has no extraction filters, so the check
    is made here in that case.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(dest.resolve()):
            sys.exit(f"refusing to extract {member.name!r} from {tar.name}: "
                     "not a plain file or folder inside the archive")
    tar.extractall(dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall even if detectron2 imports")
    args = parser.parse_args()
    if _installed() and not args.force:
        print("detectron2 is already installed (use --force to reinstall)")
        return 0
    if importlib.util.find_spec("torch") is None:
        sys.exit("install torch first: the Detectron2 sdist imports it while building")
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        subprocess.check_call(pip + ["download", "--no-deps", "--no-build-isolation", "-q", "-d", tmp, SDIST])
        archives = list(tmp_path.glob("*.tar.gz"))
        if len(archives) != 1:
            sys.exit(f"expected one sdist in {tmp}, found {[a.name for a in archives]}")
        with tarfile.open(archives[0]) as tar:
            _extract(tar, tmp_path / "src")
        (root,) = [p for p in (tmp_path / "src").iterdir() if (p / "setup.py").exists()]
        patch_sources(root)
        subprocess.check_call(pip + ["install", "-q", "--no-build-isolation", str(root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
