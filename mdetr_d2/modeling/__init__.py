from .backbone import MDETREfficientNet, MDETRResNet, build_mdetr_efficientnet_backbone, build_mdetr_resnet_backbone
from .scratch_backbone import build_mdetr_scratch_resnet_backbone
from .meta_arch import MDETR, EncoderMemory, ImageFeatures
from .text_encoder import EncodedText, TextEncoder
from .transformer import Transformer

__all__ = [
    "MDETREfficientNet",
    "MDETRResNet",
    "build_mdetr_efficientnet_backbone",
    "build_mdetr_resnet_backbone",
    "build_mdetr_scratch_resnet_backbone",
    "MDETR",
    "EncoderMemory",
    "ImageFeatures",
    "EncodedText",
    "TextEncoder",
    "Transformer",
]
