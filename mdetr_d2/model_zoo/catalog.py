"""The released MDETR checkpoints by name (official README tables, Zenodo record 4721981).

Each entry gives the file name on the release, the recipe config of this repository that builds
the same model (with the backbone overrides for the EfficientNet variants) and the official
numbers (reference §8.3).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from detectron2.config import CfgNode, get_cfg

from ..config import add_mdetr_config

__all__ = ["MODEL_ZOO", "ZooEntry", "get_config", "get_config_file", "get_entry"]

_EB3 = ("MODEL.BACKBONE.NAME", "build_mdetr_efficientnet_backbone",
        "MODEL.MDETR.EFFICIENTNET_VARIANT", "b3")
_EB5 = ("MODEL.BACKBONE.NAME", "build_mdetr_efficientnet_backbone",
        "MODEL.MDETR.EFFICIENTNET_VARIANT", "b5")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One released checkpoint.

    Attributes:
        name: what ``mdetr://<name>`` resolves (the file name without ``_checkpoint.pth``).
        filename: the file on the release.
        config: the recipe under ``configs/`` that builds this model.
        overrides: config overrides (KEY VALUE ...) for this checkpoint's backbone.
        results: the official numbers of this checkpoint.
    """

    name: str
    filename: str
    config: str
    overrides: tuple[str, ...] = ()
    results: str = ""


def _entry(name: str, config: str, results: str, overrides: tuple[str, ...] = ()) -> ZooEntry:
    return ZooEntry(name, f"{name}_checkpoint.pth", config, overrides, results)


_FLICKR_ANY = "Flickr30k any-box R@1/5/10 val {} / test {}"
MODEL_ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _entry("pretrained_resnet101", "pretrain/mdetr_pretrain_r101.yaml",
           "pre-training val: GQA AP 58.9, Flickr AP 75.6, RefCOCO AP 60.3, RefCOCO/+/g P@1 "
           "72.1/58.0/55.7; " + _FLICKR_ANY.format("82.5/92.9/94.9", "83.4/93.5/95.3")),
    _entry("pretrained_EB3", "pretrain/mdetr_pretrain_eb3.yaml",
           "pre-training val: GQA AP 59.5, Flickr AP 76.6, RefCOCO AP 57.6, RefCOCO/+/g P@1 "
           "70.2/56.7/53.8; " + _FLICKR_ANY.format("82.9/93.2/95.2", "84.0/93.8/95.6")),
    _entry("pretrained_EB5", "pretrain/mdetr_pretrain_eb5.yaml",
           "pre-training val: GQA AP 59.9, Flickr AP 76.4, RefCOCO AP 61.8, RefCOCO/+/g P@1 "
           "73.4/58.8/57.1; " + _FLICKR_ANY.format("83.6/93.4/95.1", "84.3/93.9/95.8")),
    _entry("flickr_merged_resnet101", "mdetr_flickr_merged.yaml",
           "Flickr30k merged-box R@1/5/10 val 82.3/91.8/93.7 / test 83.8/92.7/94.4"),
    _entry("refcoco_resnet101", "mdetr_refcoco.yaml",
           "RefCOCO P@1 val 86.75, testA 89.58, testB 81.41"),
    _entry("refcoco_EB3", "mdetr_refcoco.yaml",
           "RefCOCO P@1 val 87.51, testA 90.40, testB 82.67", _EB3),
    _entry("refcoco+_resnet101", "mdetr_refcoco+.yaml",
           "RefCOCO+ P@1 val 79.52, testA 84.09, testB 70.62"),
    _entry("refcoco+_EB3", "mdetr_refcoco+.yaml",
           "RefCOCO+ P@1 val 81.13, testA 85.52, testB 72.96", _EB3),
    _entry("refcocog_resnet101", "mdetr_refcocog.yaml", "RefCOCOg P@1 val 81.64, test 80.89"),
    _entry("refcocog_EB3", "mdetr_refcocog.yaml", "RefCOCOg P@1 val 83.35, test 83.31", _EB3),
    _entry("phrasecut_resnet101", "mdetr_phrasecut_step2.yaml",
           "PhraseCut test M-IoU 53.1, Pr@0.5/0.7/0.9 56.1/38.9/11.9"),
    _entry("phrasecut_EB3", "mdetr_phrasecut_step2.yaml",
           "PhraseCut test M-IoU 53.7, Pr@0.5/0.7/0.9 57.5/39.9/11.9", _EB3),
    _entry("gqa_resnet101", "mdetr_gqa.yaml", "GQA accuracy test-dev 62.48, test-std 61.99"),
    _entry("gqa_EB5", "mdetr_gqa.yaml", "GQA accuracy test-dev 62.95, test-std 62.45", _EB5),
    _entry("lvis1", "mdetr_lvis1.yaml",
           "LVIS v1 minival fixed AP 16.7 (AP50 25.8, APr/c/f 11.2/14.6/19.5)"),
    _entry("lvis10", "mdetr_lvis10.yaml",
           "LVIS v1 minival fixed AP 24.2 (AP50 38.0, APr/c/f 20.9/24.9/24.3)"),
    _entry("lvis100", "mdetr_lvis100.yaml",
           "LVIS v1 minival fixed AP 22.5 (AP50 35.2, APr/c/f 7.4/22.7/25.0)"),
    _entry("clevr", "mdetr_clevr_step2.yaml",
           "CLEVR accuracy 99.7 (count 99.3, exist 99.9, compare number 99.4, query 99.9, compare "
           "attribute 99.9)"),
    _entry("clevr_humans", "mdetr_clevr_humans.yaml",
           "CLEVR-Humans accuracy 81.7 (59.9 before fine-tuning)"),
    _entry("clevr_cogent", "mdetr_clevr_cogent.yaml",
           "CLEVR-CoGenT accuracy testA 99.8, testB 76.7"),
)}


def get_entry(name: str) -> ZooEntry:
    """The entry of ``name`` (case-insensitive; a ``_checkpoint.pth`` file name works too)."""
    key = name.removesuffix("_checkpoint.pth").lower()
    for entry in MODEL_ZOO.values():
        if entry.name.lower() == key:
            return entry
    raise KeyError(
        f"no released MDETR checkpoint named {name!r}; known names: {', '.join(MODEL_ZOO)}"
    )


def get_config_file(name: str) -> str:
    """Path of the recipe config of checkpoint ``name`` (configs/ ships with the repository)."""
    path = Path(__file__).resolve().parents[2] / "configs" / get_entry(name).config
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the recipe configs come with the mdetr_d2 "
                                "repository checkout (configs/)")
    return str(path)


def get_config(name: str) -> CfgNode:
    """The recipe config of checkpoint ``name`` with its backbone overrides and
    ``MODEL.WEIGHTS = "mdetr://<name>"``: ready to evaluate or fine-tune from it."""
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(get_config_file(name))
    entry = get_entry(name)
    cfg.merge_from_list(list(entry.overrides) + ["MODEL.WEIGHTS", f"mdetr://{entry.name}"])
    return cfg
