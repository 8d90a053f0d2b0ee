"""A small ResNet with a trainable normalisation, for MDETR models trained from scratch.

MDETR's own backbones carry frozen BatchNorm because they start from ImageNet weights; trained from
random weights, frozen (identity) normalisation leaves a plain deep CNN that learns slowly. This builder
assembles Detectron2's ResNet from basic blocks at any width with ``MODEL.RESNETS.NORM`` ("BN", "GN",
"SyncBN", ...), which the CPU-sized embedded default uses (``configs/synthetic/``).
"""
from __future__ import annotations

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_LEVELS = ("res2", "res3", "res4", "res5")


def _scratch_resnet_args(cfg, input_shape: ShapeSpec) -> dict:
    r = cfg.MODEL.RESNETS
    return {
        "in_channels": input_shape.channels,
        "depth": r.DEPTH,
        "stem_channels": r.STEM_OUT_CHANNELS,
        "res2_channels": r.RES2_OUT_CHANNELS,
        "norm": r.NORM,
        "last_level": r.SCRATCH_LAST_LEVEL,
        "all_levels": cfg.MODEL.MDETR.MASKS,
        "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
    }


@configurable(from_config=_scratch_resnet_args)
def scratch_resnet(
    *,
    in_channels: int = 3,
    depth: int = 18,
    stem_channels: int = 64,
    res2_channels: int = 64,
    norm: str = "BN",
    last_level: str = "res5",
    all_levels: bool = False,
    freeze_at: int = 0,
) -> ResNet:
    """ResNet-18/34 layout with ``res2_channels`` channels at stride 4, doubling per stage.

    Returns ``res2..res5`` with ``all_levels`` (the mask head, ``MODEL.MDETR.MASKS``, needs them),
    else the single level ``last_level`` (``MODEL.RESNETS.SCRATCH_LAST_LEVEL``, ``res5`` by default,
    stride 32): ``res4`` (stride 16) or ``res3`` (stride 8) stop the network early, which gives
    small images and small objects a finer grid for less compute; MDETR's transformer reads the
    coarsest level the backbone returns.
    """
    if depth not in _BLOCKS:
        raise ValueError(f"the scratch ResNet supports depths {sorted(_BLOCKS)}, got {depth}")
    if last_level not in _LEVELS:
        raise ValueError(
            f"MODEL.RESNETS.SCRATCH_LAST_LEVEL must be one of {_LEVELS}, got {last_level!r}"
        )
    if all_levels and last_level != "res5":
        raise ValueError("MODEL.MDETR.MASKS needs MODEL.RESNETS.SCRATCH_LAST_LEVEL 'res5' (the mask head reads res2..res5)")
    num_stages = _LEVELS.index(last_level) + 1
    stem = BasicStem(in_channels, stem_channels, norm=norm)
    stages, in_ch, out_ch = [], stem_channels, res2_channels
    for i, num_blocks in enumerate(_BLOCKS[depth][:num_stages]):
        stride = 1 if i == 0 else 2
        stages.append(ResNet.make_stage(BasicBlock, num_blocks, stride_per_block=[stride] + [1] * (num_blocks - 1),
                                        in_channels=in_ch, out_channels=out_ch, norm=norm))
        in_ch, out_ch = out_ch, out_ch * 2
    out_features = list(_LEVELS) if all_levels else [last_level]
    return ResNet(stem, stages, out_features=out_features).freeze(freeze_at)


@BACKBONE_REGISTRY.register()
def build_mdetr_scratch_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """:func:`scratch_resnet` from ``MODEL.RESNETS.*`` (``MODEL.RESNETS.NORM``: "BN", "GN", ...)."""
    return scratch_resnet(cfg, input_shape)
