"""The models the benchmark measures: its config (with an optional random text encoder made
locally), realistic BN statistics for random weights, and one model per backbone arithmetic mode."""
from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model
from transformers import RobertaConfig, RobertaModel

from mdetr_d2 import add_mdetr_config
from mdetr_d2.checkpoint.build import official_cfg
from mdetr_synthetic.text_encoder import train_caption_tokenizer

from .inputs import CAPTION, PHRASES


# roberta-base's shape (reference §0), with random weights and a small local BPE tokenizer.
ROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    vocab_size=50265, max_position_embeddings=514)


def synthetic_text_encoder(folder: Path, size: str = "base") -> str:
    """A local text encoder folder: a BPE tokenizer trained on the benchmark phrases and a random
    RoBERTa of roberta-base's shape (``size="base"``) or a tiny one (``"tiny"``). Reused if present."""
    folder = Path(folder) / f"roberta_{size}"
    if (folder / "config.json").is_file() and any(folder.glob("model*.safetensors")):
        return str(folder)
    tokenizer = train_caption_tokenizer([CAPTION, *PHRASES] * 4, folder, vocab_size=400,
                                        model_max_length=512)
    shape = dict(ROBERTA_BASE) if size == "base" else dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=len(tokenizer), max_position_embeddings=514)
    config = RobertaConfig(**shape, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        RobertaModel(config, add_pooling_layer=True).save_pretrained(str(folder))
    return str(folder)


def build_cfg(args):
    """The model config: ``--official-checkpoint`` (its args), else ``--config-file`` + ``--opts``."""
    text_encoder = args.text_encoder
    if text_encoder and text_encoder.startswith("synthetic-"):
        text_encoder = synthetic_text_encoder(Path(args.cache_dir), text_encoder.split("-", 1)[1])
    if args.official_checkpoint:
        cfg = official_cfg(args.official_checkpoint, text_encoder=text_encoder, device=args.device)
        cfg.MODEL.MDETR.WEIGHTS_KEY = "model_ema"
    else:
        cfg = get_cfg()
        add_mdetr_config(cfg)
        if args.config_file:
            cfg.merge_from_file(args.config_file)
        if text_encoder:
            cfg.MODEL.MDETR.TEXT_ENCODER.NAME = text_encoder
            # Random weights unless the folder holds trained ones: the benchmark does not need them.
            cfg.MODEL.MDETR.TEXT_ENCODER.PRETRAINED = False
        cfg.MODEL.DEVICE = args.device
    cfg.merge_from_list(args.opts)
    cfg.INPUT.MDETR.TEST_SIZE = args.short_side
    cfg.INPUT.MDETR.TEST_MAX_SIZE = max(args.long_side, cfg.INPUT.MDETR.TEST_MAX_SIZE)
    cfg.freeze()
    return cfg


@torch.no_grad()
def calibrate_frozen_bn(backbone: torch.nn.Module, images: torch.Tensor) -> None:
    """Give a randomly initialised ResNet realistic FrozenBN statistics: each BN's running mean/var are
    set, in forward order, to the statistics of its input on ``images``. Without this, random weights
    make the activations grow to ~1e5 through 101 layers, which trained weights never do."""
    def set_stats(module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3)))

    hooks = [m.register_forward_pre_hook(set_stats) for m in backbone.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    try:
        b = backbone.body  # torchvision's own module calls, so that every BN module runs (and its hook)
        x = b.maxpool(b.relu(b.bn1(b.conv1(images))))
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            x = layer(x)
    finally:
        for h in hooks:
            h.remove()


def models_by_mode(cfg, model, modes: list[str]) -> dict:
    """Our model in each backbone arithmetic mode ("exact": the official arithmetic, the default;
    "fast": ``MODEL.MDETR.BACKBONE_FAST_PATH``), all with the weights of ``model``."""
    out = {}
    for mode in modes:
        fast = mode == "fast"
        if fast == cfg.MODEL.MDETR.BACKBONE_FAST_PATH:
            out[mode] = model
            continue
        if cfg.MODEL.BACKBONE.NAME != "build_mdetr_resnet_backbone":
            raise ValueError("the fast backbone path exists for the ResNet backbones only")
        other_cfg = cfg.clone()
        other_cfg.defrost()
        other_cfg.MODEL.MDETR.BACKBONE_FAST_PATH = fast
        other = build_model(other_cfg).eval()
        other.load_state_dict(model.state_dict())
        out[mode] = other
    return out
