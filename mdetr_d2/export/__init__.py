"""Deployment: MDETR as TorchScript or ONNX graphs plus a small runtime (README "Export").

This layer sits above ``modeling`` (beside ``engine``): it traces the model's own methods and
runs them with the model's own pre- and post-processing functions.
"""
from .exporter import check_export, export_mdetr
from .graphs import GroundingGraph, ImageEncoderGraph, TextEncoderGraph
from .manifest import ExportError, read_manifest
from .runtime import ExportedMDETR

__all__ = [
    "ExportError",
    "ExportedMDETR",
    "GroundingGraph",
    "ImageEncoderGraph",
    "TextEncoderGraph",
    "check_export",
    "export_mdetr",
    "read_manifest",
]
