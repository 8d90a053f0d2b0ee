"""The export folder's manifest: which graph files belong together, and how to check them."""
from __future__ import annotations

import hashlib
import json
import os

FORMATS = ("torchscript", "onnx")
GRAPH_SUFFIX = {"torchscript": ".ts", "onnx": ".onnx"}
GRAPHS = ("text_encoder", "image_encoder", "grounding")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: per-input dtypes and shapes (input_specs)
TOKENIZER_DIR = "tokenizer"


class ExportError(ValueError):
    """An export folder that cannot be run: missing or altered files, another manifest version."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str, manifest: dict) -> None:
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)


def read_manifest(folder: str) -> dict:
    """The manifest of an export folder, with every graph file checked against its SHA-256.

    Raises:
        ExportError: no manifest, another manifest version or format, a missing graph file, or a
            graph file that is not the one exported with this manifest.
    """
    path = os.path.join(folder, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        raise ExportError(f"{folder}: no {MANIFEST}: not an MDETR export folder "
                          "(tools/export_model.py writes one; give the folder, not a graph file)"
                          ) from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        manifest = {}
    version, fmt = manifest.get("manifest_version"), manifest.get("format")
    if version != MANIFEST_VERSION or fmt not in FORMATS:
        raise ExportError(f"{path}: manifest version {version!r}, format "
                          f"{fmt!r}; this mdetr_d2 reads version "
                          f"{MANIFEST_VERSION} in {FORMATS}: export the model again")
    for name in GRAPHS:
        spec = manifest["graphs"][name]
        file = os.path.join(folder, spec["file"])
        if not os.path.isfile(file):
            raise ExportError(f"{file}: missing (the {name} graph of {path})")
        if sha256_of(file) != spec["sha256"]:
            raise ExportError(
                f"{file}: not the {name} graph exported with {path} (its SHA-256 differs): the "
                "graph files of one export must stay together; export the model again rather "
                "than mixing files of different exports or weights"
            )
    return manifest
