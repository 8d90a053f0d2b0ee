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


@BACKBONE_REGISTRY.register()
def build_mdetr_scratch_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet-18/34 layout with ``RES2_OUT_CHANNELS`` channels at stride 4, doubling per stage.

    Levels ``res2..res5`` like the other MDETR backbones (all of them with ``MODEL.MDETR.MASKS``).
    ``RES5_DILATION: 2`` keeps ``res5`` at stride 16 (its first block does not downsample; basic
    blocks have no dilated form), a finer grid for small images and small objects.
    """
    r = cfg.MODEL.RESNETS
    if r.RES5_DILATION not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    if r.DEPTH not in _BLOCKS:
        raise ValueError(f"the scratch ResNet supports depths {sorted(_BLOCKS)}, got {r.DEPTH}")
    stem = BasicStem(input_shape.channels, r.STEM_OUT_CHANNELS, norm=r.NORM)
    stages, in_channels, out_channels = [], r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    for i, num_blocks in enumerate(_BLOCKS[r.DEPTH]):
        stride = 1 if i == 0 or (i == 3 and r.RES5_DILATION == 2) else 2
        stages.append(ResNet.make_stage(BasicBlock, num_blocks, stride_per_block=[stride] + [1] * (num_blocks - 1),
                                        in_channels=in_channels, out_channels=out_channels, norm=r.NORM))
        in_channels, out_channels = out_channels, out_channels * 2
    out_features = ["res2", "res3", "res4", "res5"] if cfg.MODEL.MDETR.MASKS else ["res5"]
    return ResNet(stem, stages, out_features=out_features).freeze(cfg.MODEL.BACKBONE.FREEZE_AT)
