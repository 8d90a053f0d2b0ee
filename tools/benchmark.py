#!/usr/bin/env python
"""Benchmark MDETR: inference and training speed, peak memory, the many-captions mode, and (optionally)
the official MDETR code on the same weights, side by side.

What is measured (all on one synthetic padded batch, at the evaluation resolution by default):

* both backbone arithmetic modes (``--modes``) on the same weights: "exact" (the default config: the
  official arithmetic) and "fast" (``MODEL.MDETR.BACKBONE_FAST_PATH``: folded BN, channels-last);
* inference: latency and images/s of the network (backbone, text encoder, cross-encoder, decoder,
  heads), for batch 1 and a larger batch;
* training: iterations/s of a full step (forward, losses with Hungarian matching, backward, gradient
  clipping, AdamW step) and the peak memory of the step;
* many captions (``--captions N``): N phrases on one image through
  :meth:`MDETRPredictor.predict_captions` (backbone once, captions batched) against a naive loop of
  N single-caption calls;
* class prompts (``--class-prompts N``): detection of the first N LVIS v1 category names on one
  image, both styles (``per_class``, the official LVIS protocol, and ``joined``), with the prompts
  encoded beforehand as the official evaluation does; with ``--official`` also the official
  per-chunk loop of ``scripts/eval_lvis.py`` on the same weights, and how its detections agree
  with ``per_class``;
* export (``--export torchscript onnx``): the model exported with ``tools/export_model.py``'s
  code in each backbone mode, the same padded batches (``--export-batch-sizes``, default 1 and 4)
  through the eager model, the TorchScript graphs and onnxruntime (CPU), images/s of each and the
  max |exported - eager| of the raw outputs (``--fp64-check``: also each one's distance from the
  eager model in float64);
* with ``--official PATH`` (a checkout of the official MDETR code, not part of this repository): the
  official model is built with the same weights (our state dict converted back to official names),
  the outputs (logits, boxes, projections, ``res5`` features) are compared (``--atol``, strict for the
  exact mode), and our/official ratios are reported; ``--fp64-check`` also runs everything in float64
  and reports each float32 run's distance from it. ResNet backbones only (the official EfficientNet
  path needs timm 0.4.x, reference §9).

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the resident-set high-water mark
(``VmHWM``), reset before each phase through ``/proc/self/clear_refs`` (Linux), so each phase reports
its own peak. Both numbers are for the whole process (the models' weights included).

Example (R101 + a roberta-base-sized random text encoder, CPU, with the official comparison)::

    python tools/benchmark.py --config-file configs/Base-MDETR.yaml --text-encoder synthetic-base \\
        --official /path/to/mdetr --batch-sizes 1 2 --iters 3 --captions 16 --output bench.json
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger("mdetr_d2.benchmark")

# Caption and phrase spans used for every synthetic sample (two boxes, one span each).
CAPTION = "a man in a red shirt holds a small dog on the grass ."
SPANS = [[[0, 5]], [[29, 40]]]  # "a man", "a small dog"
PHRASES = ["a man", "a red shirt", "a small dog", "the grass", "a person", "a dog", "a cat", "a car",
           "a tree", "the sky", "a chair", "a table", "a bicycle", "a bus", "a horse", "a sign",
           "a window", "a door", "a bottle", "a cup", "a phone", "a laptop", "a bag", "a hat",
           "a shoe", "a ball", "a kite", "a boat", "a bird", "a road", "a wall", "a lamp"]
# roberta-base's shape (reference §0), with random weights and a small local BPE tokenizer.
ROBERTA_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    vocab_size=50265, max_position_embeddings=514)


# --------------------------------------------------------------------------------------------------
# Setup
def synthetic_text_encoder(folder: Path, size: str = "base") -> str:
    """A local text encoder folder: a BPE tokenizer trained on the benchmark phrases and a random
    RoBERTa of roberta-base's shape (``size="base"``) or a tiny one (``"tiny"``). Reused if present."""
    from transformers import RobertaConfig, RobertaModel

    from mdetr_synthetic.text_encoder import train_caption_tokenizer

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
    from detectron2.config import get_cfg

    from mdetr_d2 import add_mdetr_config
    from mdetr_d2.checkpoint.build import official_cfg

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


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB uint8 image (gradients + noise): realistic enough for timing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def training_inputs(model, tokenizer, batch: int, h: int, w: int) -> list[dict]:
    """Mapper-like training dicts (``image`` CHW float 0-255 RGB, ``caption``, ``instances``)."""
    from detectron2.structures import Boxes, Instances

    from mdetr_d2.structures import create_positive_map, spans_to_tensor

    out = []
    for i in range(batch):
        # Images differ in size so the batch is padded, as in real training.
        hi, wi = h - 32 * i, w - 48 * i
        image = torch.from_numpy(synthetic_image(hi, wi, i).transpose(2, 0, 1).astype("float32"))
        inst = Instances((hi, wi))
        inst.gt_boxes = Boxes(torch.tensor([[0.1 * wi, 0.2 * hi, 0.5 * wi, 0.9 * hi],
                                            [0.55 * wi, 0.5 * hi, 0.95 * wi, 0.95 * hi]]))
        inst.gt_classes = torch.ones(2, dtype=torch.int64)
        inst.gt_positive_map = create_positive_map(tokenizer(CAPTION), SPANS, 256, caption=CAPTION)
        inst.gt_tokens_positive = spans_to_tensor(SPANS)
        out.append({"image": image, "caption": CAPTION, "height": hi, "width": wi, "instances": inst})
    return out


# --------------------------------------------------------------------------------------------------
# Measurement helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a code block: CUDA max allocated, or the CPU resident-set high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = float("nan")
        self.start_mb = float("nan")

    @staticmethod
    def _status_mb(field: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start_mb = self._status_mb("VmRSS") or float("nan")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = self._status_mb("VmHWM")
            # ru_maxrss (KiB on Linux) cannot be reset: a fallback for systems without /proc.
            self.peak_mb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def timed(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def timed_interleaved(fns: dict, iters: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Like :func:`timed` for several functions, alternating them call by call, so that a load change on a
    shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def peak_memory(fn, device: torch.device) -> float:
    """Peak memory (MB) of one call of ``fn``."""
    with PeakMemory(device) as mem:
        fn()
        _sync(device)
    return mem.peak_mb


@torch.no_grad()
def calibrate_frozen_bn(backbone: torch.nn.Module, images: torch.Tensor) -> None:
    """Give a randomly initialised ResNet realistic FrozenBN statistics: each BN's running mean/var are
    set, in forward order, to the statistics of its input on ``images``. Without this, random weights
    make the activations grow to ~1e5 through 101 layers, which trained weights never do."""
    from detectron2.layers import FrozenBatchNorm2d

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


def summary(times: list[float], items: int) -> dict:
    med = statistics.median(times)
    return {"latency_ms_median": 1e3 * med, "latency_ms_min": 1e3 * min(times),
            "latency_ms_mean": 1e3 * statistics.fmean(times), "throughput": items / med, "iters": len(times)}


def max_abs_diff(ours: dict, theirs: dict,
                 keys=("pred_logits", "pred_boxes", "proj_queries", "proj_tokens", "res5"),
                 dtype: torch.dtype = torch.float32) -> dict:
    diffs = {}
    for k in keys:
        if k in ours and k in theirs:
            diffs[k] = (ours[k].to(dtype) - theirs[k].to(dtype)).abs().max().item()
    for i, layer in enumerate(theirs.get("aux_outputs", [])):
        for k in ("pred_logits", "pred_boxes"):
            d = (ours["aux_outputs"][i][k].to(dtype) - layer[k].to(dtype)).abs().max().item()
            diffs["aux_outputs"] = max(diffs.get("aux_outputs", 0.0), d)
    return diffs


# --------------------------------------------------------------------------------------------------
# The official code (run-time shims live here only)
class OfficialMDETR:
    """The official MDETR model, criterion and weight dict, built from a checkout at ``path``.

    The official repository is imported as it is (``models``, ``util`` top-level packages); nothing is
    copied into this project. Shims needed on current torch/torchvision/transformers, applied only while
    building or on the built objects:

    1. ``models.build_model`` is imported directly, not ``main.py``: ``main`` calls
       ``torch.set_deterministic``, which no longer exists, and imports every dataset.
    2. ``torchvision.models.resnet*`` no longer accept ``pretrained=True``: while building, the constructors
       are wrapped to build random weights (ours are loaded right after, strictly).
    3. transformers 5 removed ``batch_encode_plus``: the official tokenizer instance gets one that calls
       the tokenizer (same arguments, same output).
    4. The text encoder is a local folder passed as ``text_encoder_type``; current RoBERTa has no
       ``embeddings.position_ids`` buffer, so the converted state dict has none either.
    """

    def __init__(self, path: str, args: argparse.Namespace, device: torch.device):
        path = str(Path(path).resolve())
        if not (Path(path) / "models" / "mdetr.py").is_file():
            raise FileNotFoundError(f"{path}: not a checkout of the official MDETR code (no models/mdetr.py)")
        if path not in sys.path:
            # The official code only imports as top-level packages from its own root.
            sys.path.insert(0, path)
        import torchvision

        from models import build_model  # the official builder

        originals = {}

        def no_download(fn):
            def build(*a, pretrained=False, **kw):  # shim 2
                return fn(*a, weights=None, **kw)
            return build

        for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
            originals[name] = getattr(torchvision.models, name)
            setattr(torchvision.models, name, no_download(originals[name]))
        try:
            self.model, self.criterion, _, _, self.weight_dict = build_model(args)
        finally:
            for name, fn in originals.items():
                setattr(torchvision.models, name, fn)
        tok = self.model.transformer.tokenizer
        if not hasattr(tok, "batch_encode_plus"):  # shim 3
            tok.batch_encode_plus = lambda texts, **kw: tok(list(texts), **kw)
        self.model.to(device)
        self.device = device
        from util.misc import NestedTensor

        self.NestedTensor = NestedTensor

    @staticmethod
    def args_from_cfg(cfg) -> argparse.Namespace:
        """The official ``args`` (only the keys ``models.build_model`` reads) for our config."""
        m = cfg.MODEL.MDETR
        if cfg.MODEL.BACKBONE.NAME != "build_mdetr_resnet_backbone":
            raise ValueError("the official comparison supports ResNet backbones only (EfficientNet needs timm 0.4.x)")
        if m.MASKS or m.QA_HEAD != "none" or m.CONTRASTIVE_LOSS:
            raise ValueError("the official comparison supports the detection model (no masks, QA, global contrastive)")
        return argparse.Namespace(
            backbone=f"resnet{cfg.MODEL.RESNETS.DEPTH}", dilation=False, position_embedding="sine",
            lr_backbone=cfg.SOLVER.BACKBONE_LR, masks=False, mask_model="none", frozen_weights=None,
            hidden_dim=m.HIDDEN_DIM, nheads=m.NHEADS, enc_layers=m.ENC_LAYERS, dec_layers=m.DEC_LAYERS,
            dim_feedforward=m.DIM_FEEDFORWARD, dropout=m.DROPOUT, pre_norm=False, pass_pos_and_query=True,
            text_encoder_type=m.TEXT_ENCODER.NAME, freeze_text_encoder=m.TEXT_ENCODER.FREEZE,
            contrastive_loss=False, contrastive_align_loss=m.CONTRASTIVE_ALIGN_LOSS,
            contrastive_loss_hdim=m.CONTRASTIVE_HDIM, temperature_NCE=m.TEMPERATURE, num_queries=m.NUM_QUERIES,
            aux_loss=m.AUX_LOSS, do_qa=False, split_qa_heads=False, predict_final=False, combine_datasets=[],
            no_detection=False, set_loss="hungarian", set_cost_class=m.SET_COST_CLASS,
            set_cost_bbox=m.SET_COST_BBOX, set_cost_giou=m.SET_COST_GIOU, ce_loss_coef=m.CE_LOSS_COEF,
            bbox_loss_coef=m.BBOX_LOSS_COEF, giou_loss_coef=m.GIOU_LOSS_COEF,
            contrastive_align_loss_coef=m.CONTRASTIVE_ALIGN_LOSS_COEF,
            contrastive_loss_coef=m.CONTRASTIVE_LOSS_COEF, mask_loss_coef=m.MASK_LOSS_COEF,
            dice_loss_coef=m.DICE_LOSS_COEF, qa_loss_coef=m.QA_LOSS_COEF, eos_coef=m.EOS_COEF,
            device=cfg.MODEL.DEVICE,
        )

    def load_from(self, ours: torch.nn.Module) -> None:
        """Copy our weights in, each official key mapped through the project's own official->ours renaming."""
        from mdetr_d2.checkpoint.official import convert_official_state_dict

        official_keys = list(self.model.state_dict())
        ours_sd = ours.state_dict()
        state = {}
        for key in official_keys:
            mapped = next(iter(convert_official_state_dict({key: torch.empty(0)})), None)
            if mapped is None or mapped not in ours_sd:
                raise KeyError(f"official key {key} has no counterpart ({mapped}) in our model")
            state[key] = ours_sd[mapped]
        self.model.load_state_dict(state, strict=True)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, captions: list[str]) -> dict:
        """The two-stage call ``engine.evaluate`` / ``train_one_epoch`` make."""
        samples = self.NestedTensor(images, mask)
        cache = self.model(samples, captions, encode_and_save=True)
        return self.model(samples, captions, encode_and_save=False, memory_cache=cache)

    def outputs(self, images: torch.Tensor, mask: torch.Tensor, captions: list[str]) -> dict:
        """:meth:`forward` plus the backbone's stride-32 features (``res5``), for the comparisons."""
        with torch.no_grad():
            res5 = list(self.model.backbone[0].body(images).values())[-1]
            return _with_res5(self.forward(images, mask, captions), res5)

    def class_prompt_detector(self, images: torch.Tensor, mask: torch.Tensor, names: list[str],
                              orig_size: tuple[int, int], chunk_size: int = 32):
        """The per-image loop of the official LVIS evaluation (``scripts/eval_lvis.py``) on one
        padded image: names cleaned and encoded in chunks once (here, outside the returned
        callable); per image the backbone once, then per chunk the image features repeated, the
        cross-encoder on the pre-encoded text, the decoder, ``PostProcess`` and every query labelled
        with its caption's class.

        Returns a callable giving ``(scores, boxes, labels)`` of all chunks (labels: indices into
        ``names``).
        """
        from models.postprocessors import PostProcess  # the official post-processing

        from mdetr_d2.structures import clean_category_name

        om = self.model
        captions = [clean_category_name(n) for n in names]
        chunks = [captions[i:i + chunk_size] for i in range(0, len(captions), chunk_size)]
        texts = []
        with torch.no_grad():
            for chunk in chunks:
                tok = om.transformer.tokenizer.batch_encode_plus(
                    chunk, padding="longest", return_tensors="pt").to(self.device)
                hidden = om.transformer.text_encoder(**tok).last_hidden_state.transpose(0, 1)
                texts.append((tok.attention_mask.ne(1).bool(), om.transformer.resizer(hidden), tok))
        samples = self.NestedTensor(images, mask)
        size = torch.tensor([list(orig_size)], device=self.device)
        post = PostProcess()

        def detect():
            with torch.no_grad():
                features, pos = om.backbone(samples)
                src, src_mask = features[-1].decompose()
                scores, boxes, labels = [], [], []
                start = 0
                for chunk, text in zip(chunks, texts):
                    n = len(chunk)
                    cache = om.transformer(om.input_proj(src.repeat(n, 1, 1, 1)),
                                           src_mask.repeat(n, 1, 1), om.query_embed.weight,
                                           pos[-1].repeat(n, 1, 1, 1), text, encode_and_save=True,
                                           text_memory=None, img_memory=None,
                                           text_attention_mask=None)
                    out = om(samples, chunk, encode_and_save=False, memory_cache=cache)
                    for j, result in enumerate(post(out, size.repeat(n, 1))):
                        scores.append(result["scores"])
                        boxes.append(result["boxes"])
                        labels.append(result["labels"] * 0 + start + j)
                    start += n
            return torch.cat(scores), torch.cat(boxes), torch.cat(labels)

        return detect

    def targets(self, model, inputs: list[dict], padded: torch.Tensor):
        """Official targets and the collated binary positive map from our training dicts."""
        targets, maps = [], []
        for x in inputs:
            inst = x["instances"]
            h, w = inst.image_size
            b = inst.gt_boxes.tensor / torch.tensor([w, h, w, h])
            targets.append({
                "boxes": torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1).to(self.device),
                "labels": inst.gt_classes.to(self.device),
                "tokens_positive": SPANS,
                "positive_map": inst.gt_positive_map.to(self.device),
            })
            maps.append(inst.gt_positive_map > 0)
        # The official collate binarizes the maps into a bool tensor, then hands it on as float.
        return targets, torch.cat(maps).float().to(self.device)


# --------------------------------------------------------------------------------------------------
# Phases
def _autocast(args, device):
    if args.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16)


def padded_batch(model, inputs: list[dict]):
    images = model.preprocess_image(inputs)
    return images.tensor, model.padding_mask(images)


def models_by_mode(cfg, model, modes: list[str]) -> dict:
    """Our model in each backbone arithmetic mode ("exact": the official arithmetic, the default;
    "fast": ``MODEL.MDETR.BACKBONE_FAST_PATH``), all with the weights of ``model``."""
    from detectron2.modeling import build_model

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


def _with_res5(outputs: dict, res5: torch.Tensor) -> dict:
    return {**outputs, "res5": res5}


def ours_outputs(model, images, mask, captions) -> dict:
    """The network outputs and the backbone's stride-32 features, for the comparisons (not timed)."""
    with torch.no_grad():
        return _with_res5(model.forward_network(images, mask, captions), model.backbone(images)["res5"])


def run_inference(args, models: dict, official, device, results: dict) -> None:
    first = next(iter(models.values()))
    for batch in args.batch_sizes:
        inputs = training_inputs(first, first.text_encoder.tokenizer, batch, args.short_side, args.long_side)
        images, mask = padded_batch(first, inputs)
        captions = [x["caption"] for x in inputs]
        row = {"batch": batch, "input": list(images.shape[-2:]), "ours": {}}

        def forward(model):
            def fn():
                with torch.no_grad(), _autocast(args, device):
                    return model.forward_network(images, mask, captions)
            return fn

        fns = {mode: forward(model) for mode, model in models.items()}
        if official is not None:
            def theirs():
                with torch.no_grad(), _autocast(args, device):
                    return official.forward(images, mask, captions)

            fns["official"] = theirs
        times = timed_interleaved(fns, args.iters, args.warmup, device)
        for name, fn in fns.items():
            entry = {**summary(times[name], batch), "peak_mb": peak_memory(fn, device)}
            if name == "official":
                row["official"] = entry
            else:
                row["ours"][name] = entry
        if official is not None:
            with _autocast(args, device):
                reference = official.outputs(images, mask, captions)
                mine = {mode: ours_outputs(m, images, mask, captions) for mode, m in models.items()}
            row["speedup"] = {mode: row["ours"][mode]["throughput"] / row["official"]["throughput"]
                              for mode in models}
            row["max_abs_diff"] = {mode: max_abs_diff(out, reference) for mode, out in mine.items()}
            # The scale of each output, to read the differences against.
            row["official_max_abs"] = {k: reference[k].abs().max().item()
                                       for k in ("pred_logits", "pred_boxes", "res5")}
            row["outputs_agree"] = {mode: all(v <= args.atol for v in d.values())
                                    for mode, d in row["max_abs_diff"].items()}
            if args.fp64_check:
                row["fp64"] = fp64_check(models, official, images, mask, captions,
                                         {**mine, "official": reference})
        results["inference"].append(row)
        logger.info("inference %s", json.dumps(row))


def run_export(args, models: dict, device, results: dict) -> None:
    """Eager vs TorchScript vs onnxruntime on the same weights and padded batches (CPU)."""
    import copy

    from mdetr_d2.export import ExportedMDETR, export_mdetr
    from mdetr_d2.export.exporter import raw_outputs

    if device.type != "cpu":
        raise ValueError("--export measures CPU runtimes: run with --device cpu")
    for mode, model in models.items():
        runtimes = {}
        for fmt in args.export:
            folder = os.path.join(args.cache_dir, "export", mode, fmt)
            export_mdetr(model, folder, fmt, check=False)
            name = "onnxruntime" if fmt == "onnx" else fmt
            runtimes[name] = ExportedMDETR(folder, num_threads=torch.get_num_threads())
        for batch in args.export_batch_sizes:
            inputs = training_inputs(model, model.text_encoder.tokenizer, batch, args.short_side,
                                     args.long_side)
            images, mask = padded_batch(model, inputs)
            sizes = torch.tensor(model.preprocess_image(inputs).image_sizes)
            captions = [x["caption"] for x in inputs]
            fns = {"eager": lambda: raw_outputs(model, images, mask, captions)}
            for name, runtime in runtimes.items():
                fns[name] = lambda r=runtime: r.network(images, sizes, captions)
            times = timed_interleaved(fns, args.iters, args.warmup, device)
            row = {"mode": mode, "batch": batch, "input": list(images.shape[-2:])}
            row.update({name: summary(times[name], batch) for name in fns})
            reference = fns["eager"]()
            outputs = {name: fns[name]() for name in runtimes}
            row["max_abs_diff"] = {name: {k: (v - reference[k]).abs().max().item()
                                          for k, v in out.items()}
                                   for name, out in outputs.items()}
            if args.fp64_check:
                exact = raw_outputs(copy.deepcopy(model).double(), images.double(), mask, captions)
                row["fp32_vs_fp64"] = {
                    name: {k: (v.double() - exact[k]).abs().max().item() for k, v in out.items()}
                    for name, out in {"eager": reference, **outputs}.items()}
            results["export"].append(row)
            logger.info("export %s", json.dumps(row))


def fp64_check(models: dict, official, images: torch.Tensor, mask: torch.Tensor, captions: list[str],
               fp32_outputs: dict) -> dict:
    """Both models once in float64. ``same_function``: ours (each mode) vs official in float64, where
    float32 rounding is gone and what is left measures whether the two compute the same function;
    ``fp32_vs_fp64``: how far each float32 run (our modes, the official code) is from the float64 one."""
    try:
        official.model.double()
        reference = official.outputs(images.double(), mask, captions)
        same = {}
        for mode, model in models.items():
            model.double()
            try:
                same[mode] = max_abs_diff(ours_outputs(model, images.double(), mask, captions), reference,
                                          dtype=torch.float64)
            finally:
                model.float()  # float32 -> float64 -> float32 is exact: the weights are unchanged
    finally:
        official.model.float()
    return {"same_function": same,
            "fp32_vs_fp64": {name: max_abs_diff(out, reference, dtype=torch.float64)
                             for name, out in fp32_outputs.items()}}


def run_training(args, cfg, models: dict, official, device, results: dict) -> None:
    from detectron2.utils.events import EventStorage

    from mdetr_d2.engine.optimizer import build_mdetr_optimizer

    clip = 0.1  # official --clip_max_norm

    def official_optimizer(module):
        # The official main.py: torch.optim.AdamW with PyTorch's default (per-parameter loop on CPU).
        return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-4)

    def ours_step(model, inputs):
        opt = build_mdetr_optimizer(cfg, model)  # what MDETRTrainer trains with (fused AdamW groups)

        def step():
            with _autocast(args, device):
                losses = model(inputs)
            loss = sum(losses.values())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            # Gradients freed after the step, not before the next one: the models timed in turn do
            # not hold each other's gradients.
            opt.zero_grad(set_to_none=True)
            return loss
        return step

    first = next(iter(models.values()))
    for batch in args.train_batch_sizes:
        inputs = training_inputs(first, first.text_encoder.tokenizer, batch, args.short_side, args.long_side)
        row = {"batch": batch, "ours": {}}
        for model in models.values():
            model.train()
        fns = {mode: ours_step(model, inputs) for mode, model in models.items()}
        if official is not None:
            om = official.model
            om.train()
            oopt = official_optimizer(om)
            images, mask = padded_batch(first, inputs)
            targets, pmap = official.targets(first, inputs, images)
            captions = [x["caption"] for x in inputs]

            def official_step():
                with _autocast(args, device):
                    outputs = official.forward(images, mask, captions)
                    loss_dict = official.criterion(outputs, targets, pmap)
                loss = sum(loss_dict[k] * official.weight_dict[k] for k in loss_dict if k in official.weight_dict)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(om.parameters(), clip)
                oopt.step()
                oopt.zero_grad(set_to_none=True)
                return loss

            fns["official"] = official_step
        with EventStorage():
            times = timed_interleaved(fns, args.train_iters, args.warmup, device)
            for name, fn in fns.items():
                entry = {**summary(times[name], batch), "iters_per_s": 1 / statistics.median(times[name]),
                         "peak_mb": peak_memory(fn, device)}
                if name == "official":
                    row["official"] = entry
                else:
                    row["ours"][name] = entry
        if official is not None:
            row["speedup"] = {mode: row["ours"][mode]["iters_per_s"] / row["official"]["iters_per_s"]
                              for mode in models}
            om.eval()
        for model in models.values():
            model.eval()
        results["training"].append(row)
        logger.info("training %s", json.dumps(row))


def lvis_names(n: int) -> list[str]:
    """The first ``n`` LVIS v1 category names, by id (Detectron2 ships the list)."""
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    return [c["name"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])][:n]


def run_class_prompts(args, models: dict, official, device, results: dict) -> None:
    """Class-prompt detection of N LVIS names on one image: both styles, and the official loop (with
    the exact backbone mode when measured: the official arithmetic, so the gain is the rest's)."""
    mode = "exact" if "exact" in models else next(iter(models))
    model = models[mode]
    names = lvis_names(args.class_prompts)
    h, w = args.short_side, args.long_side
    x = {"image": torch.from_numpy(synthetic_image(h, w, 11).transpose(2, 0, 1).astype("float32")),
         "height": h, "width": w, "classes": names}
    settings = model.class_prompts
    last = {}

    def ours(style: str):
        def detect():
            model.class_prompts = dataclasses.replace(settings, style=style)  # the cache keeps both
            with torch.no_grad(), _autocast(args, device):
                last[style] = model([x])[0]
        return detect

    fns = {"per_class": ours("per_class"), "joined": ours("joined")}
    if official is not None:
        images, mask = padded_batch(model, [x])
        official_detect = official.class_prompt_detector(images, mask, names, (h, w),
                                                         settings.chunk_size)

        def theirs():
            with _autocast(args, device):
                last["official"] = official_detect()

        fns["official"] = theirs
    # At least one warm-up round: it encodes the prompts, which the official loop did beforehand.
    times = timed_interleaved(fns, args.iters, max(args.warmup, 1), device)

    def captions(style: str) -> int:
        model.class_prompts = dataclasses.replace(settings, style=style)
        return sum(len(c.captions) for c in model.encoded_class_prompts(names)[0].chunks)

    row = {"names": len(names), "input": [h, w], "mode": mode, "chunk_size": settings.chunk_size,
           "captions": {style: captions(style) for style in ("per_class", "joined")}}
    model.class_prompts = settings
    for name in fns:
        row[name] = summary(times[name], 1)
    row["joined_speedup_over_per_class"] = (row["joined"]["throughput"]
                                            / row["per_class"]["throughput"])
    if official is not None:
        row["per_class_speedup"] = row["per_class"]["throughput"] / row["official"]["throughput"]
        row["joined_speedup"] = row["joined"]["throughput"] / row["official"]["throughput"]
        scores, boxes, labels = last["official"]
        every = last["per_class"]["all_instances"]
        row["max_abs_diff"] = {"scores": (every.scores - scores).abs().max().item(),
                               "boxes_px": (every.pred_boxes.tensor - boxes).abs().max().item()}
        row["labels_equal"] = bool(torch.equal(every.pred_classes, labels))
        row["outputs_agree"] = row["labels_equal"] and row["max_abs_diff"]["scores"] <= args.atol
    results["class_prompts"] = row
    logger.info("class prompts %s", json.dumps(row))


def run_captions(args, predictor, device, results: dict) -> None:
    n = args.captions
    phrases = [PHRASES[i % len(PHRASES)] for i in range(n)]
    image = synthetic_image(args.short_side, args.long_side, 7)[:, :, ::-1]  # BGR, as the predictor expects

    last = {}

    def batched():
        with _autocast(args, device):
            last["batched"] = predictor.predict_captions(image, phrases)

    def naive():
        with _autocast(args, device):
            last["naive"] = [predictor(image, p) for p in phrases]

    t_batched = timed(batched, args.iters, min(args.warmup, 1), device)
    t_naive = timed(naive, max(1, args.iters // 2), 0, device)  # N times slower: fewer repeats
    diff = max((x["instances"].pred_boxes.tensor - y["instances"].pred_boxes.tensor).abs().max().item()
               for x, y in zip(last["batched"], last["naive"]))
    row = {"captions": n, "batched": summary(t_batched, n), "naive_loop": summary(t_naive, n),
           "speedup": statistics.median(t_naive) / statistics.median(t_batched), "max_abs_box_diff_px": diff}
    results["captions"] = row
    logger.info("captions %s", json.dumps(row))


# --------------------------------------------------------------------------------------------------
def _diff_note(diffs: dict) -> str:
    """logits / boxes / res5 of one comparison."""
    return " / ".join(f"{diffs[k]:.1e}" if k in diffs else "-" for k in ("pred_logits", "pred_boxes", "res5"))


def format_table(results: dict) -> str:
    modes = results["options"]["modes"]
    head = ["phase", "batch", "input", *(f"ours {m}" for m in modes), "official",
            *(f"{m}/official" for m in modes), *(f"max |{m} - official| logits / boxes / res5" for m in modes)]
    load = results.get("load_average")
    lines = [f"device: {results['device']}  threads: {results['threads']}  amp: {results['options']['amp']}  "
             f"compile: {results['options']['compile']}"
             + (f"  load average (1 min, start / end): {load['start']:.2f} / {load['end']:.2f} on "
                f"{load['cpus']} CPUs" if load else ""),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(phase, r, size, fmt):
        off = r.get("official")
        cells = [phase, str(r["batch"]), size, *(fmt(r["ours"][m]) for m in modes), fmt(off) if off else "-"]
        cells += [f"{r['speedup'][m]:.2f}x" if off else "-" for m in modes]
        cells += [_diff_note(r["max_abs_diff"][m]) if "max_abs_diff" in r else "-" for m in modes]
        lines.append("| " + " | ".join(cells) + " |")

    for r in results["inference"]:
        row("inference (img/s, ms)", r, f"{r['input'][0]}x{r['input'][1]}",
            lambda e: f"{e['throughput']:.3f} ({e['latency_ms_median']:.0f} ms)")
    for r in results["training"]:
        row("training (it/s, peak MB)", r, results["train_input"],
            lambda e: f"{e['iters_per_s']:.3f} ({e['peak_mb']:.0f})")
    for r in results["inference"]:
        if "fp64" in r:
            dist = r["fp64"]["fp32_vs_fp64"]
            lines.append(f"fp64, batch {r['batch']}: max |fp32 - fp64| logits / boxes / res5: "
                         + "; ".join(f"{name} {_diff_note(d)}" for name, d in dist.items())
                         + "; same function (ours fp64 vs official fp64): "
                         + "; ".join(f"{m} {max(d.values()):.1e}" for m, d in r["fp64"]["same_function"].items()))
    p = results.get("class_prompts")
    if p:
        line = (f"{p['names']} LVIS names on 1 {p['input'][0]}x{p['input'][1]} image ({p['mode']} mode): "
                f"per_class {p['per_class']['latency_ms_median'] / 1e3:.2f} s ({p['captions']['per_class']} "
                f"captions), joined {p['joined']['latency_ms_median'] / 1e3:.2f} s ({p['captions']['joined']} "
                f"prompts)")
        if p.get("official"):
            d = p["max_abs_diff"]
            line += (f"; official loop {p['official']['latency_ms_median'] / 1e3:.2f} s: per_class "
                     f"{p['per_class_speedup']:.2f}x, joined {p['joined_speedup']:.2f}x; per_class vs official: "
                     f"labels {'equal' if p['labels_equal'] else 'DIFFER'}, scores {d['scores']:.1e}, "
                     f"boxes {d['boxes_px']:.1e} px")
        lines.append(line)
    for r in results.get("export") or []:
        runtimes = [k for k in ("eager", "torchscript", "onnxruntime") if k in r]
        diffs = "; ".join(f"{name} " + ", ".join(f"{k.removeprefix('pred_')} {v:.1e}"
                                                  for k, v in d.items())
                          for name, d in r["max_abs_diff"].items())
        size = f"{r['input'][0]}x{r['input'][1]}"
        lines.append(f"export ({r['mode']} mode), batch {r['batch']}, {size}: "
                     + ", ".join(f"{name} {r[name]['throughput']:.3f} img/s" for name in runtimes)
                     + f"; max |exported - eager|: {diffs}")
    c = results.get("captions")
    if c:
        lines.append(f"{c['captions']} captions on 1 image: predict_captions {c['batched']['latency_ms_median'] / 1e3:.2f} s, "
                     f"naive loop {c['naive_loop']['latency_ms_median'] / 1e3:.2f} s ({c['speedup']:.2f}x), "
                     f"max box diff {c['max_abs_box_diff_px']:.1e} px")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="", help="model config (yaml)")
    p.add_argument("--official-checkpoint", default="", help="build from an official MDETR checkpoint instead")
    p.add_argument("--text-encoder", default="",
                   help="text encoder folder/name, or synthetic-base / synthetic-tiny (random, made locally)")
    p.add_argument("--official", default="", help="checkout of the official MDETR code to compare with")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 2],
                   help="inference batches (none: skip)")
    p.add_argument("--train-batch-sizes", type=int, nargs="*", default=[2], help="training batches (none: skip)")
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--long-side", type=int, default=1066)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--captions", type=int, default=0, help="many-captions mode: N phrases on one image")
    p.add_argument("--class-prompts", type=int, default=0,
                   help="class-prompt detection of the first N LVIS names on one image (1203: all)")
    p.add_argument("--export", nargs="*", choices=["torchscript", "onnx"], default=[],
                   help="also export the model and time eager vs these runtimes (CPU)")
    p.add_argument("--export-batch-sizes", type=int, nargs="*", default=[1, 4],
                   help="batches of the export rows")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--modes", nargs="+", choices=["exact", "fast"], default=["exact", "fast"],
                   help="backbone arithmetic modes to measure (same weights): exact = the official arithmetic "
                        "(default config), fast = MODEL.MDETR.BACKBONE_FAST_PATH (folded BN, channels-last)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the transformer")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="max |ours - official| allowed on the outputs of the exact mode (exit code 1 beyond)")
    p.add_argument("--fp64-check", action="store_true",
                   help="with --official: also compare both models run in float64 (same function?)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "mdetr_d2_benchmark"))
    p.add_argument("--output", default="", help="write the results as json here")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mdetr_d2.predictor import MDETRPredictor

    cfg = build_cfg(args)
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(args.seed)
    predictor = MDETRPredictor(cfg, image_format="BGR")  # loads MODEL.WEIGHTS when set
    model = predictor.model.eval()
    if not cfg.MODEL.WEIGHTS and hasattr(model.backbone, "body") and hasattr(model.backbone.body, "layer4"):
        images = torch.from_numpy(synthetic_image(args.short_side // 2, args.long_side // 2, 1).transpose(2, 0, 1))
        images = ((images.float().to(device) - model.pixel_mean) / model.pixel_std)[None]
        calibrate_frozen_bn(model.backbone, images)

    models = models_by_mode(cfg, model, args.modes)
    official = None
    if args.official:
        official = OfficialMDETR(args.official, OfficialMDETR.args_from_cfg(cfg), device)
        official.load_from(model)
        official.model.eval()
    if args.compile:
        for m in models.values():
            m.backbone.compile()
            m.transformer.compile()

    results = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(),
        "model": {"backbone": cfg.MODEL.BACKBONE.NAME, "depth": cfg.MODEL.RESNETS.DEPTH,
                  "hidden_dim": cfg.MODEL.MDETR.HIDDEN_DIM, "enc_layers": cfg.MODEL.MDETR.ENC_LAYERS,
                  "dec_layers": cfg.MODEL.MDETR.DEC_LAYERS, "text_encoder": cfg.MODEL.MDETR.TEXT_ENCODER.NAME,
                  "text_hidden": model.text_encoder.output_dim,
                  "text_layers": model.text_encoder.body.config.num_hidden_layers,
                  "params_m": sum(p.numel() for p in model.parameters()) / 1e6},
        "options": {"amp": args.amp, "modes": args.modes, "compile": args.compile,
                    "iters": args.iters, "train_iters": args.train_iters, "warmup": args.warmup},
        "train_input": f"{args.short_side}x{args.long_side}",
        "official": bool(official), "inference": [], "training": [], "captions": None,
        "class_prompts": None, "export": [],
        # Other jobs skew absolute times (interleaved ratios less so): how busy was the machine?
        "load_average": {"start": os.getloadavg()[0], "end": None, "cpus": os.cpu_count()},
    }
    run_inference(args, models, official, device, results)
    if args.export:  # before training, which changes the weights
        run_export(args, models, device, results)
    if args.class_prompts:  # before training, which changes both models' weights
        run_class_prompts(args, models, official, device, results)
    if args.train_batch_sizes:
        run_training(args, cfg, models, official, device, results)
    if args.captions:
        run_captions(args, predictor, device, results)
    results["load_average"]["end"] = os.getloadavg()[0]
    table = format_table(results)
    results["table"] = table
    sys.stdout.write(table + "\n")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2, default=str))
    # Strict for the exact mode only: the fast mode's distance is measured and reported, not bounded.
    agree = [r["outputs_agree"]["exact"] for r in results["inference"] if "exact" in r.get("outputs_agree", {})]
    prompts = results["class_prompts"] or {}
    if prompts.get("mode") == "exact" and "outputs_agree" in prompts:
        agree.append(prompts["outputs_agree"])
    if args.amp == "none" and not all(agree):
        logger.error("ours (exact mode) and the official outputs differ by more than %g", args.atol)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
