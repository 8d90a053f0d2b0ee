"""The default ResNet backbone computes the official arithmetic bit for bit; the fast path stays within
its documented distance from a float64 run (README "Parity with the official code")."""
import pytest
import torch
import torchvision
from detectron2.modeling import build_model
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from mdetr_d2.modeling.backbone import MDETRResNet

from .conftest import tiny_mdetr_cfg

LEVELS = {"layer1": "res2", "layer2": "res3", "layer3": "res4", "layer4": "res5"}
# Documented in the README: max |fast - float64| / max |float64| per level (measured 1.6e-6 here).
FAST_PATH_RELATIVE_DISTANCE = 1e-5


class PlainFrozenBN(nn.Module):
    """Frozen BN as a plain reference writes it: ``x * scale + bias`` after the convolution."""

    def __init__(self, n):
        super().__init__()
        for name, value in (("weight", torch.ones(n)), ("bias", torch.zeros(n)),
                            ("running_mean", torch.zeros(n)), ("running_var", torch.ones(n))):
            self.register_buffer(name, value)

    def forward(self, x):
        w, b = self.weight.reshape(1, -1, 1, 1), self.bias.reshape(1, -1, 1, 1)
        rv, rm = self.running_var.reshape(1, -1, 1, 1), self.running_mean.reshape(1, -1, 1, 1)
        scale = w * (rv + 1e-5).rsqrt()
        return x * scale + (b - rm * scale)


@pytest.fixture(scope="module")
def resnet50_and_reference():
    torch.manual_seed(0)
    ours = MDETRResNet(depth=50, out_features=list(LEVELS.values()))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random frozen statistics and affines on every BN
        for name, value in ours.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=g) * 1.5 + 0.5)
            elif name.endswith("running_mean"):
                value.copy_(torch.randn(value.shape, generator=g) * 0.1)
            elif value.ndim == 1 and name.endswith("weight"):
                value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.5)
            elif value.ndim == 1 and name.endswith("bias"):
                value.copy_(torch.randn(value.shape, generator=g) * 0.1)
    reference = torchvision.models.resnet50(norm_layer=PlainFrozenBN)
    del reference.fc, reference.avgpool
    reference.load_state_dict({k.removeprefix("body."): v for k, v in ours.state_dict().items()})
    images = torch.randn(2, 3, 96, 128, generator=g)
    return ours, IntermediateLayerGetter(reference, LEVELS), images


def test_default_resnet50_equals_plain_reference_bit_for_bit(resnet50_and_reference):
    ours, reference, images = resnet50_and_reference
    assert not ours.fast
    with torch.no_grad():
        expected = reference(images)
        got = ours(images)
    for level in LEVELS.values():
        assert torch.equal(got[level], expected[level]), level
    # Training mode with gradients (the frozen BN's other branch in Detectron2) too.
    got = ours(images.clone().requires_grad_())
    assert all(torch.equal(got[level], expected[level]) for level in LEVELS.values())


def test_fast_path_within_documented_distance_of_float64(resnet50_and_reference):
    ours, _, images = resnet50_and_reference
    try:
        with torch.no_grad():
            ours.fast = True
            fast = ours(images)
            ours.fast = False
            ours.double()
            fp64 = ours(images.double())
    finally:
        ours.fast = False
        ours.float()  # float32 -> float64 -> float32 is exact
    for level in LEVELS.values():
        distance = (fast[level].double() - fp64[level]).abs().max() / fp64[level].abs().max()
        assert 0 < distance <= FAST_PATH_RELATIVE_DISTANCE, (level, distance.item())


def test_fast_path_is_an_explicit_config_key(tiny_text_encoder):
    assert not build_model(tiny_mdetr_cfg(tiny_text_encoder)).backbone.fast
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{"MODEL.MDETR.BACKBONE_FAST_PATH": True})
    assert build_model(cfg).backbone.fast
