"""The adapter for the official MDETR code: the only module of the benchmark that edits
``sys.path`` or patches anything at run time."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

from mdetr_d2.checkpoint.official import convert_official_state_dict
from mdetr_d2.structures import clean_category_name

from .compare import with_res5
from .inputs import SPANS


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
        # Local: the official top-level packages import only once their root is on sys.path.
        from models import build_model  # the official builder
        from util.misc import NestedTensor

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
            return with_res5(self.forward(images, mask, captions), res5)

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
        from models.postprocessors import PostProcess  # the official post-processing (local: as above)

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
