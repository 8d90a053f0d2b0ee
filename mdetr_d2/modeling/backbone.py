"""MDETR's image backbones as Detectron2 ``Backbone``s (reference §1.2).

* ResNet-18/34/50/101 in torchvision's layout (stride on the 3x3 conv), every BatchNorm frozen with
  eps 1e-5, stem + res2 frozen (``FREEZE_AT=2``). By default it computes the official arithmetic
  (convolution, then ``x * scale + bias``, contiguous memory), so official weights give the
  official outputs bit for bit; ``fast=True`` folds each frozen BN into its convolution and runs
  channels-last (faster, different float rounding; README "Parity with the official code").
* The tf-EfficientNet family from timm, with MDETR's semantics made explicit: each BatchNorm is frozen
  (eps 1e-5, what the released weights were trained with) and *followed by its activation*. Newer timm
  fuses BN and SiLU into ``BatchNormAct2d``; the official code's BN replacement silently drops the SiLU
  there (reference §9), ours keeps it. TF "SAME" padding comes from timm's ``tf_`` models.

Both return the four levels ``res2..res5`` (strides 4..32); the transformer uses ``res5`` and the mask
head ``res2..res4``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

_LEVELS = ("res2", "res3", "res4", "res5")
_STRIDES = (4, 8, 16, 32)
_RESNET_CHANNELS = {18: (64, 128, 256, 512), 34: (64, 128, 256, 512),
                    50: (256, 512, 1024, 2048), 101: (256, 512, 1024, 2048)}
FROZEN_BN_EPS = 1e-5


class OfficialFrozenBatchNorm2d(FrozenBatchNorm2d):
    """Frozen BatchNorm computed as the official MDETR code computes it (reference §1.2).

    ``scale = weight * rsqrt(running_var + eps)``, ``shift = bias - running_mean * scale``, then
    ``x * scale + shift`` in the input's memory format, with or without gradients. Detectron2's
    parent calls ``F.batch_norm`` when no gradient is needed, which rounds differently (~1e-4 on
    ResNet-50 features); this class keeps the official rounding always. Same buffers, state dict.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


def _frozen_bn(num_features: int) -> OfficialFrozenBatchNorm2d:
    return OfficialFrozenBatchNorm2d(num_features, eps=FROZEN_BN_EPS)


def conv_frozen_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` as one convolution: the frozen affine is folded into the kernel and bias (the
    fast path).

    Same function up to float rounding and the same parameters/gradients for ``conv``; it saves the
    separate normalisation pass over the activation (about a fifth of the ResNet's CPU time) and the
    activation it would keep for backward.
    """
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ``Bottleneck``/``BasicBlock`` with every conv+FrozenBN folded (same function)."""
    out = F.relu(conv_frozen_bn(block.conv1, block.bn1, x), inplace=True)
    if hasattr(block, "conv3"):
        out = F.relu(conv_frozen_bn(block.conv2, block.bn2, out), inplace=True)
        out = conv_frozen_bn(block.conv3, block.bn3, out)
    else:
        out = conv_frozen_bn(block.conv2, block.bn2, out)
    identity = x if block.downsample is None else conv_frozen_bn(block.downsample[0], block.downsample[1], x)
    return F.relu(out.add_(identity), inplace=True)


class _LevelsBackbone(Backbone):
    """Shared ``output_shape`` / ``out_features`` handling for the four-level backbones."""

    def _init_levels(self, channels: tuple[int, ...], out_features: list[str] | None):
        self._out_features = list(out_features or _LEVELS)
        unknown = set(self._out_features) - set(_LEVELS)
        if unknown:
            raise ValueError(f"unknown backbone output(s) {sorted(unknown)}; choose from {_LEVELS}")
        self._out_feature_channels = dict(zip(_LEVELS, channels))
        self._out_feature_strides = dict(zip(_LEVELS, _STRIDES))

    @property
    def size_divisibility(self) -> int:
        # MDETR pads batches to the largest image only (reference §1.1).
        return 0

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }


class MDETRResNet(_LevelsBackbone):
    """torchvision ResNet body with FrozenBN (eps 1e-5); parameters before ``freeze_at`` are fixed."""

    @configurable
    def __init__(self, depth: int = 101, freeze_at: int = 2, out_features: list[str] | None = None,
                 pretrained: bool = False, fast: bool = False):
        """
        Args:
            fast: the deployment path: every frozen BN folded into its convolution and channels-last
                memory format (faster on CPU with oneDNN and with cuDNN tensor cores; same
                weights, same function, different float rounding). False: the official
                arithmetic, bit for bit.
        """
        super().__init__()
        self.fast = fast
        if depth not in _RESNET_CHANNELS:
            raise ValueError(f"MDETR ResNet depth must be one of {sorted(_RESNET_CHANNELS)}, got {depth}")
        weights = "IMAGENET1K_V1" if pretrained else None  # the legacy `pretrained=True` weights
        body = getattr(torchvision.models, f"resnet{depth}")(weights=weights, norm_layer=_frozen_bn)
        del body.fc, body.avgpool
        self.body = body
        self._init_levels(_RESNET_CHANNELS[depth], out_features)
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> dict:
        return {
            "depth": cfg.MODEL.RESNETS.DEPTH,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "out_features": _out_features(cfg),
            "pretrained": cfg.MODEL.MDETR.BACKBONE_PRETRAINED,
            "fast": cfg.MODEL.MDETR.BACKBONE_FAST_PATH,
        }

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem (``freeze_at >= 1``) and res2..res{freeze_at} (official rule: only layer2-4 train)."""
        stages = [("conv1", "bn1")] + [(f"layer{i}",) for i in range(1, 5)]
        for names in stages[:freeze_at]:
            for name in names:
                getattr(self.body, name).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.body
        if self.fast:
            # torchvision's modules and parameters, each FrozenBN folded into its conv.
            x = x.contiguous(memory_format=torch.channels_last)
            x = b.maxpool(F.relu(conv_frozen_bn(b.conv1, b.bn1, x), inplace=True))
        else:
            # torchvision's own modules in torchvision's order: the official computation.
            x = b.maxpool(b.relu(b.bn1(b.conv1(x.contiguous()))))
        outputs = {}
        last = max(self._out_features, key=_LEVELS.index)
        for name, layer in zip(_LEVELS, (b.layer1, b.layer2, b.layer3, b.layer4)):
            for block in layer:
                x = _residual_block(block, x) if self.fast else block(x)
            if name in self._out_features:
                outputs[name] = x
            if name == last:
                break
        return outputs


class FrozenBatchNormAct2d(OfficialFrozenBatchNorm2d):
    """Frozen BatchNorm followed by an activation (timm ``BatchNormAct2d`` with frozen statistics)."""

    def __init__(self, num_features: int, act: nn.Module, eps: float = FROZEN_BN_EPS):
        super().__init__(num_features, eps=eps)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def freeze_batchnorm_keep_activation(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a frozen one (eps 1e-5) that keeps the BN's activation.

    The replacement copies affine parameters and running statistics, so pretrained weights survive.
    """
    if isinstance(module, nn.BatchNorm2d):
        act = getattr(module, "act", None) or nn.Identity()
        if getattr(module, "drop", None) is not None and not isinstance(module.drop, nn.Identity):
            raise ValueError("BatchNormAct2d with dropout is not supported by the frozen replacement")
        frozen = FrozenBatchNormAct2d(module.num_features, act)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm_keep_activation(child)
        if new is not child:
            setattr(module, name, new)
    return module


class MDETREfficientNet(_LevelsBackbone):
    """timm ``tf_efficientnet_<variant>`` features (strides 4..32) with frozen BN + activation.

    No convolution is frozen (as in the official timm backbone); only the BN statistics and affines are.
    """

    @configurable
    def __init__(self, variant: str = "b3", out_features: list[str] | None = None, pretrained: bool = False):
        super().__init__()
        import timm  # local: ~0.7 s to import, and only the EfficientNet backbones need it

        # The released B3/B5 models start from the noisy-student ImageNet weights.
        name = f"tf_efficientnet_{variant}.ns_jft_in1k" if pretrained else f"tf_efficientnet_{variant}"
        body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=(1, 2, 3, 4))
        self.body = freeze_batchnorm_keep_activation(body)
        self._init_levels(tuple(body.feature_info.channels()), out_features)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec | None = None) -> dict:
        return {
            "variant": cfg.MODEL.MDETR.EFFICIENTNET_VARIANT,
            "out_features": _out_features(cfg),
            "pretrained": cfg.MODEL.MDETR.BACKBONE_PRETRAINED,
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {name: f for name, f in zip(_LEVELS, features) if name in self._out_features}


def _out_features(cfg) -> list[str]:
    # The mask head needs every level; otherwise only the stride-32 level feeds the transformer.
    return list(_LEVELS) if cfg.MODEL.MDETR.MASKS else ["res5"]


@BACKBONE_REGISTRY.register()
def build_mdetr_resnet_backbone(cfg, input_shape: ShapeSpec) -> MDETRResNet:
    return MDETRResNet(cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_mdetr_efficientnet_backbone(cfg, input_shape: ShapeSpec) -> MDETREfficientNet:
    return MDETREfficientNet(cfg, input_shape)
