"""A small ResNet with a trainable normalisation, for MDETR models trained from scratch.

MDETR's own backbones carry frozen BatchNorm because they start from ImageNet weights; trained from
random weights, frozen (identity) normalisation leaves a plain deep CNN that learns slowly. This builder
assembles Detectron2's ResNet from basic blocks at any width with ``MODEL.RESNETS.NORM`` ("BN", "GN",
"SyncBN", ...), which the CPU-sized embedded default uses (``configs/synthetic/``).
"""
from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, ResNet

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_LEVELS = ("res2", "res3", "res4", "res5")


@BACKBONE_REGISTRY.register()
def build_mdetr_scratch_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet-18/34 layout with ``RES2_OUT_CHANNELS`` channels at stride 4, doubling per stage.

    Returns ``res2..res5`` with ``MODEL.MDETR.MASKS`` (the mask head needs them), else the single
    level ``MODEL.RESNETS.SCRATCH_LAST_LEVEL`` (``res5`` by default, stride 32): ``res4`` (stride
    16) or ``res3`` (stride 8) stop the network early, which gives small images and small objects a
    finer grid for less compute; MDETR's transformer reads the coarsest level the backbone returns.
    """
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in _BLOCKS:
        raise ValueError(f"the scratch ResNet supports depths {sorted(_BLOCKS)}, got {r.DEPTH}")
    if r.SCRATCH_LAST_LEVEL not in _LEVELS:
        raise ValueError(f"MODEL.RESNETS.SCRATCH_LAST_LEVEL must be one of {_LEVELS}, got {r.SCRATCH_LAST_LEVEL!r}")
    if cfg.MODEL.MDETR.MASKS and r.SCRATCH_LAST_LEVEL != "res5":
        raise ValueError("MODEL.MDETR.MASKS needs MODEL.RESNETS.SCRATCH_LAST_LEVEL 'res5' (the mask head reads res2..res5)")
    num_stages = _LEVELS.index(r.SCRATCH_LAST_LEVEL) + 1
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_channels, out_channels = [], r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, num_blocks in enumerate(_BLOCKS[r.DEPTH][:num_stages]):
        stride = 1 if i == 0 else 2
        stages.append(ResNet.make_stage(BasicBlock, num_blocks, stride_per_block=[stride] + [1] * (num_blocks - 1),
                                        in_channels=in_channels, out_channels=out_channels, norm=r.NORM))
        in_channels, out_channels = out_channels, out_channels * 2
    out_features = list(_LEVELS) if cfg.MODEL.MDETR.MASKS else [r.SCRATCH_LAST_LEVEL]
    return ResNet(stem, stages, out_features=out_features).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
