"""The MDETR meta-architecture: image backbone + text encoder -> cross-encoder -> decoder -> heads."""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn
from torchvision.ops import box_convert

from ..structures.qa import load_qa_vocab
from ..structures.tokenizer import MAX_TOKEN_SLOTS, caption_token_limit
from .class_prompts import ClassPrompts, ClassPromptSettings, build_class_prompts, route_inputs
from .criterion import MDETRCriterion
from .heads import MLP, build_qa_head
from .official_names import official_names_pre_hook
from .position_encoding import PositionEmbeddingSine
from .postprocessing import class_prompt_results, grounded_results
from .segmentation import AttentionMap, MaskHead
from .text_encoder import EncodedText, TextEncoder
from .transformer import Transformer

logger = logging.getLogger(__name__)

# Class lists whose encoded prompts a model keeps (e.g. one per evaluation dataset).
_PROMPT_CACHE_SIZE = 4


@dataclass
class ImageFeatures:
    """Caption-independent image encodings: backbone levels, their padding masks (True = pad), the
    projected stride-32 map and its positional embedding (all batch-first)."""

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    projected: torch.Tensor
    pos: torch.Tensor

    def expand(self, n: int) -> "ImageFeatures":
        """The features of a single image repeated for a batch of ``n`` captions (no copy)."""
        rep = lambda t: t.expand(n, *t.shape[1:])  # noqa: E731
        return ImageFeatures({k: rep(v) for k, v in self.features.items()},
                             {k: rep(v) for k, v in self.masks.items()}, rep(self.projected), rep(self.pos))

    def index_select(self, index: torch.Tensor) -> "ImageFeatures":
        """The features of a new batch whose i-th image is ``index[i]`` of this one (images shared
        by several captions are encoded once)."""
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        return ImageFeatures({k: pick(v) for k, v in self.features.items()},
                             {k: pick(v) for k, v in self.masks.items()}, pick(self.projected),
                             pick(self.pos))


@dataclass
class EncoderMemory:
    """Everything the decoder needs, from one encoder pass (the official "memory cache", §1.19).

    All tensors are batch-first: ``memory`` B×S×D (image tokens, [CLS], then text tokens),
    ``padding_mask`` B×S, ``pos`` B×S×D (zero on text).
    """

    memory: torch.Tensor
    padding_mask: torch.Tensor
    pos: torch.Tensor
    text: EncodedText
    image: ImageFeatures
    img_pooled: torch.Tensor | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        """(h, w) of the stride-32 map."""
        return tuple(self.image.projected.shape[-2:])

    @property
    def text_memory(self) -> torch.Tensor:
        """The cross-encoded text tokens (B×L×D), used by the contrastive alignment head."""
        return self.memory[:, -self.text.features.shape[1]:]

    @property
    def image_memory(self) -> torch.Tensor:
        """The encoded image tokens as a map, B×D×h×w (used by the attention-map of the mask head)."""
        h, w = self.image_shape
        start = self.memory.shape[1] - self.text.features.shape[1] - h * w
        tokens = self.memory[:, start:start + h * w]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def normalize_and_pad(images: list[torch.Tensor], pixel_mean: torch.Tensor,
                      pixel_std: torch.Tensor) -> ImageList:
    """Normalise C×H×W images (on the statistics' device) and pad them bottom/right with zeros to
    the largest one (no size divisibility, §1.1)."""
    channels = pixel_mean.shape[0]
    for i, image in enumerate(images):
        if not torch.is_tensor(image) or image.dim() != 3 or image.shape[0] != channels:
            shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ValueError(f"image {i}: expected a C×H×W tensor with {channels} channels (the "
                             f"model's MODEL.PIXEL_MEAN), got {shape}")
    device = pixel_mean.device
    return ImageList.from_tensors([(im.to(device) - pixel_mean) / pixel_std for im in images], 0)


def nearest_source_index(in_size, out_size, device: torch.device | None = None) -> torch.Tensor:
    """The input index each of ``out_size`` outputs reads in torch's legacy nearest interpolation:
    ``floor(i * (in_size / out_size))`` in float32, at most ``in_size - 1``.

    Written as tensor arithmetic, so traced graphs follow the sizes given at run time, and so
    that onnxruntime computes it as torch does (its ``Resize`` divides by ``out / in`` instead,
    which rounds some boundary cells the other way).
    """
    scale = torch.as_tensor(in_size, dtype=torch.float32) / out_size
    index = torch.arange(out_size, dtype=torch.float32, device=device) * scale.to(device)
    return index.floor().long().clamp(max=in_size - 1)


def feature_padding_mask(pixel_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel padding mask (B×H×W, True = pad) at a feature size, by legacy nearest interpolation
    (§1.3; the same cells as ``F.interpolate(mode="nearest")``)."""
    height, width = pixel_mask.shape[-2:]
    rows = nearest_source_index(height, size[0], pixel_mask.device)
    cols = nearest_source_index(width, size[1], pixel_mask.device)
    return pixel_mask[:, rows][:, :, cols]


@META_ARCH_REGISTRY.register()
class MDETR(nn.Module):
    """Modulated detection: boxes (and masks, answers) for what a caption talks about.

    Inference input: ``[{"image": CHW tensor, "caption": str, "height": h, "width": w}, ...]``;
    output: ``[{"instances": Instances, ["qa": {...}]}]`` in original image pixels.
    Training input additionally carries ``instances`` from :class:`MDETRDatasetMapper`; output is the
    weighted loss dict.

    Class prompts (inference): an input with ``"classes"`` (a list of names), or with no
    ``"caption"``, is detected against a class list (see :meth:`detect_classes`): the input's
    ``classes``, else ``default_caption`` is grounded when set, else ``class_prompts.names``, else
    the ``thing_classes`` of ``class_prompts.dataset``. Output ``{"instances", "all_instances"}``:
    the ``detections_per_image`` best and every detection.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        text_encoder: TextEncoder,
        transformer: Transformer,
        num_queries: int,
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        criterion: nn.Module | None = None,
        aux_loss: bool = True,
        contrastive_align_dim: int = 0,
        contrastive_loss_dim: int = 0,
        qa_head: str = "none",
        qa_vocab: dict | None = None,
        predict_final: bool = False,
        masks: bool = False,
        mask_threshold: float = 0.5,
        freeze_detector: bool = False,
        input_format: str = "RGB",
        default_caption: str = "",
        class_prompts: ClassPromptSettings = ClassPromptSettings(),
        detections_per_image: int = 100,
    ):
        """
        Args:
            backbone: image backbone; its coarsest level (``res5`` for every official backbone) feeds
                the transformer, and ``masks`` also needs ``res2..res4`` below a ``res5``.
            text_encoder: language model + resizer.
            transformer: cross-encoder and decoder; its width is the hidden dim.
            num_queries: object queries.
            pixel_mean, pixel_std: normalisation in the input's pixel units and channel order.
            criterion: matcher + losses (needed for training only).
            aux_loss: also return the outputs of every decoder layer (for the auxiliary losses).
            contrastive_align_dim: width of the query/token alignment projections (0 = off).
            contrastive_loss_dim: width of the global image-text contrastive projections (0 = off).
            qa_head: "none", "gqa", "gqa_single" or "clevr".
            qa_vocab: maps answer type (or "all") to a list of answer strings, to return text answers.
            predict_final: add the CLEVR-Ref+ "is final" head.
            masks: add the attention-map + mask head.
            mask_threshold: sigmoid threshold of the predicted masks at inference.
            freeze_detector: train only the mask branch (official ``--frozen_weights``).
            input_format: "RGB" or "BGR" channel order of ``image`` tensors.
            default_caption: caption of inputs that have neither ``caption`` nor ``classes``
                ("" = detect them with class prompts).
            class_prompts: how a class list becomes prompts, and where it comes from.
            detections_per_image: class prompts: detections kept in ``instances`` (best scores
                first; 0 = all). ``all_instances`` always holds every one.
        """
        super().__init__()
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.transformer = transformer
        dim = transformer.dim
        self.position_embedding = PositionEmbeddingSine(dim // 2)
        shapes = backbone.output_shape()
        self.in_feature = max(shapes, key=lambda k: shapes[k].stride)
        self.input_proj = nn.Conv2d(shapes[self.in_feature].channels, dim, kernel_size=1)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.class_embed = nn.Linear(dim, MAX_TOKEN_SLOTS)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.aux_loss = aux_loss
        self.criterion = criterion
        self.input_format = input_format

        self.contrastive_align_projection_image = None
        self.contrastive_align_projection_text = None
        if contrastive_align_dim:
            self.contrastive_align_projection_image = nn.Linear(dim, contrastive_align_dim)
            self.contrastive_align_projection_text = nn.Linear(dim, contrastive_align_dim)

        self.cls_token = None
        if contrastive_loss_dim:
            self.cls_token = nn.Embedding(1, dim)
            nn.init.xavier_uniform_(self.cls_token.weight)
            self.contrastive_projection_image = nn.Linear(dim, contrastive_loss_dim, bias=False)
            self.contrastive_projection_text = nn.Linear(text_encoder.output_dim, contrastive_loss_dim,
                                                         bias=False)

        self.qa_head = build_qa_head(qa_head, dim)
        self.qa_head_name = qa_head
        self.qa_vocab = qa_vocab
        self.qa_embed = nn.Embedding(self.qa_head.num_queries, dim) if self.qa_head is not None else None

        self.isfinal_embed = nn.Linear(dim, 1) if predict_final else None

        self.masks = masks
        self.mask_threshold = mask_threshold
        if masks:
            if not {"res2", "res3", "res4"} <= set(shapes) or self.in_feature != "res5":
                raise ValueError(f"the mask head needs backbone levels res2..res5 with res5 the coarsest; got "
                                 f"{sorted(shapes)} with {self.in_feature} the coarsest")
            num_heads = transformer.encoder.layers[0].self_attn.num_heads
            self.bbox_attention = AttentionMap(dim, num_heads)
            self.mask_head = MaskHead(dim, num_heads, tuple(shapes[k].channels for k in ("res4", "res3", "res2")))
        if freeze_detector:
            if not masks:
                raise ValueError("MODEL.MDETR.FREEZE_DETECTOR only makes sense with MODEL.MDETR.MASKS")
            for name, p in self.named_parameters():
                p.requires_grad_(name.startswith(("bbox_attention.", "mask_head.")))

        if default_caption and class_prompts.names:
            raise ValueError("set MODEL.MDETR.DEFAULT_CAPTION or MODEL.MDETR.CLASS_PROMPTS.NAMES, "
                             "not both: inputs without a caption are either grounded on the "
                             "caption or class-detected")
        self.default_caption = default_caption
        self.class_prompts = class_prompts
        self.detections_per_image = detections_per_image
        # Encoded prompt sets by class list, with the text-encoder state they were encoded under.
        self._prompt_cache: OrderedDict = OrderedDict()

        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # Official state dicts load through any loader (Detectron2's DetectionCheckpointer too).
        self.register_load_state_dict_pre_hook(official_names_pre_hook)

    @classmethod
    def from_config(cls, cfg):
        options = cls.options_from_config(cfg)
        return {
            "backbone": build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))),
            "text_encoder": TextEncoder(cfg),
            "transformer": Transformer(cfg),
            "criterion": MDETRCriterion(cfg),
            **options,
        }

    @classmethod
    def options_from_config(cls, cfg) -> dict:
        """The arguments of ``__init__`` that are not modules (the LazyConfig recipes build the
        modules as nodes of their own and take these as they are)."""
        m = cfg.MODEL.MDETR
        if m.MASKS and m.CONTRASTIVE_ALIGN_LOSS:
            raise ValueError(
                "MODEL.MDETR.MASKS needs MODEL.MDETR.CONTRASTIVE_ALIGN_LOSS False: the segmentation model "
                "has no alignment projections (as the official PhraseCut models)"
            )
        return {
            "num_queries": m.NUM_QUERIES,
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "aux_loss": m.AUX_LOSS,
            "contrastive_align_dim": m.CONTRASTIVE_HDIM if m.CONTRASTIVE_ALIGN_LOSS else 0,
            "contrastive_loss_dim": m.CONTRASTIVE_HDIM if m.CONTRASTIVE_LOSS else 0,
            "qa_head": m.QA_HEAD,
            "qa_vocab": load_qa_vocab(m.QA_VOCAB, m.QA_HEAD) if m.QA_VOCAB else None,
            "predict_final": m.PREDICT_FINAL,
            "masks": m.MASKS,
            "mask_threshold": m.MASK_THRESHOLD,
            "freeze_detector": m.FREEZE_DETECTOR,
            "input_format": cfg.INPUT.FORMAT,
            "default_caption": m.DEFAULT_CAPTION,
            "class_prompts": ClassPromptSettings(
                names=tuple(m.CLASS_PROMPTS.NAMES),
                dataset=cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "",
                style=m.CLASS_PROMPTS.STYLE,
                chunk_size=m.CLASS_PROMPTS.CHUNK_SIZE,
                max_prompt_tokens=m.CLASS_PROMPTS.MAX_PROMPT_TOKENS,
            ),
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ----------------------------------------------------------------------------------------------
    # Detectron2 entry points
    def forward(self, batched_inputs: list[dict]):
        if self.training:
            missing = [i for i, x in enumerate(batched_inputs) if x.get("caption") is None]
            if missing:
                raise ValueError(f"training inputs {missing} have no 'caption': MDETR trains on "
                                 f"captions")
            images = self.preprocess_image(batched_inputs)
            captions = [x["caption"] for x in batched_inputs]
            outputs = self.forward_network(images.tensor, self.padding_mask(images), captions)
            return self.losses(outputs, images, batched_inputs)
        return route_inputs(batched_inputs, self.default_caption, self.class_prompts, self._ground,
                            self.detect_classes)

    def _ground(self, batched_inputs: list[dict], captions: list[str]) -> list[dict]:
        images = self.preprocess_image(batched_inputs)
        outputs = self.forward_network(images.tensor, self.padding_mask(images), captions)
        return self.inference(outputs, images, batched_inputs, captions)

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        """Normalise and pad bottom/right with zeros to the largest image (no size divisibility, §1.1)."""
        return normalize_and_pad([x["image"] for x in batched_inputs], self.pixel_mean,
                                 self.pixel_std)

    @staticmethod
    def padding_mask(images: ImageList) -> torch.Tensor:
        """B×H×W bool mask, True on the padding that :meth:`preprocess_image` added."""
        b, _, h, w = images.tensor.shape
        mask = torch.ones((b, h, w), dtype=torch.bool, device=images.tensor.device)
        for i, (ih, iw) in enumerate(images.image_sizes):
            mask[i, :ih, :iw] = False
        return mask

    # ----------------------------------------------------------------------------------------------
    # The network, on a padded normalised batch
    def forward_network(self, images: torch.Tensor, pixel_mask: torch.Tensor,
                        captions: list[str] | EncodedText) -> dict:
        """Official-format outputs (``pred_logits``, ``pred_boxes``, ``aux_outputs``, ...) of a batch.

        ``captions`` may be strings or an :class:`EncodedText` computed once with :meth:`encode_text`
        (its batch must match the images; see :meth:`EncodedText.index_select`).
        """
        return self.decode(self.encode(images, pixel_mask, captions))

    def encode_text(self, captions: list[str]) -> EncodedText:
        """Run the text encoder once; the result can be reused for many images."""
        return self.text_encoder(captions, self.device)

    def encode_image(self, images: torch.Tensor, pixel_mask: torch.Tensor) -> ImageFeatures:
        """Backbone, input projection and positional embedding of a padded batch (caption-independent)."""
        features = self.backbone(images)
        masks = {k: feature_padding_mask(pixel_mask, f.shape[-2:]) for k, f in features.items()}
        projected = self.input_proj(features[self.in_feature])
        pos = self.position_embedding(masks[self.in_feature], projected.dtype)
        return ImageFeatures(features, masks, projected, pos)

    def encode(self, images: torch.Tensor | ImageFeatures, pixel_mask: torch.Tensor | None,
               captions: list[str] | EncodedText) -> EncoderMemory:
        """Backbone + text encoder + cross-encoder (the official ``encode_and_save=True`` call).

        ``images`` may be a padded batch (with its ``pixel_mask``) or :class:`ImageFeatures` from
        :meth:`encode_image` (``pixel_mask`` unused), e.g. one image's features expanded to many captions.
        """
        image = images if isinstance(images, ImageFeatures) else self.encode_image(images, pixel_mask)
        b, d, h, w = image.projected.shape
        text = captions if isinstance(captions, EncodedText) else self.encode_text(captions)
        if text.features.shape[0] != b:
            raise ValueError(f"{text.features.shape[0]} captions for {b} images")
        img_tokens = image.projected.flatten(2).transpose(1, 2)
        img_pos = image.pos.flatten(2).transpose(1, 2)
        img_mask = image.masks[self.in_feature].flatten(1)
        if self.cls_token is not None:
            cls = self.cls_token.weight[None].expand(b, -1, -1)
            img_tokens = torch.cat([cls, img_tokens], 1)
            img_pos = torch.cat([torch.zeros_like(cls), img_pos], 1)
            img_mask = torch.cat([img_mask.new_zeros((b, 1)), img_mask], 1)
        src = torch.cat([img_tokens, text.features], 1)
        padding_mask = torch.cat([img_mask, text.padding_mask], 1)
        # Text tokens get no positional term: RoBERTa already encoded their order.
        pos_all = torch.cat([img_pos, torch.zeros_like(text.features)], 1)
        memory = self.transformer.encoder(src, padding_mask, pos_all)
        img_pooled = memory[:, 0] if self.cls_token is not None else None
        return EncoderMemory(memory, padding_mask, pos_all, text, image, img_pooled)

    def query_embeddings(self) -> torch.Tensor:
        """Object queries followed by the answer queries of QA models, (Q+n)×D."""
        if self.qa_embed is None:
            return self.query_embed.weight
        return torch.cat([self.query_embed.weight, self.qa_embed.weight], 0)

    def decode(self, enc: EncoderMemory, boxes_only: bool = False) -> dict:
        """Decoder + heads on an encoder pass (the official ``encode_and_save=False`` call).

        ``boxes_only``: just the last layer's ``pred_logits`` and ``pred_boxes`` (and
        ``tokenized``), the same values without the other heads (what class-prompt detection reads).
        """
        b = enc.memory.shape[0]
        query_pos = self.query_embeddings()[None].expand(b, -1, -1)
        hs = self.transformer.decoder(torch.zeros_like(query_pos), query_pos, enc.memory,
                                      enc.padding_mask, enc.pos)
        out: dict = {"tokenized": enc.text.tokenized}
        if boxes_only:
            last = hs[-1, :, : self.query_embed.num_embeddings]  # object queries; QA queries follow
            out["pred_logits"] = self.class_embed(last)
            out["pred_boxes"] = self.bbox_embed(last).sigmoid()
            return out
        if self.qa_head is not None:
            # Answers are read from the FIRST decoder layer's answer queries (reference §1.15).
            n = self.qa_head.num_queries
            out.update(self.qa_head(hs[0, :, -n:]))
            hs = hs[:, :, :-n]
        layers = [{"pred_logits": self.class_embed(hs), "pred_boxes": self.bbox_embed(hs).sigmoid()}]
        per_layer = layers[0]
        if self.isfinal_embed is not None:
            per_layer["pred_isfinal"] = self.isfinal_embed(hs)
        if self.contrastive_align_projection_image is not None:
            per_layer["proj_queries"] = F.normalize(self.contrastive_align_projection_image(hs), p=2, dim=-1)
            proj_tokens = F.normalize(self.contrastive_align_projection_text(enc.text_memory), p=2, dim=-1)
            out["proj_tokens"] = proj_tokens
        out.update({k: v[-1] for k, v in per_layer.items()})
        if self.aux_loss:
            aux = [{k: v[i] for k, v in per_layer.items()} for i in range(hs.shape[0] - 1)]
            if "proj_tokens" in out:
                for a in aux:
                    a["proj_tokens"] = out["proj_tokens"]
                    a["tokenized"] = out["tokenized"]
            out["aux_outputs"] = aux
        if self.cls_token is not None:
            out["img_pooled"] = self.contrastive_projection_image(enc.img_pooled)
            out["text_pooled"] = self.contrastive_projection_text(enc.text.pooled)
        if self.masks:
            attention = self.bbox_attention(hs[-1], enc.image_memory, enc.image.masks[self.in_feature])
            fpns = [enc.image.features[k] for k in ("res4", "res3", "res2")]
            out["pred_masks"] = self.mask_head(enc.image.projected, attention, fpns)
        return out

    # ----------------------------------------------------------------------------------------------
    # Training and inference
    def losses(self, outputs: dict, images: ImageList, batched_inputs: list[dict]) -> dict:
        if self.criterion is None:
            raise RuntimeError("MDETR was built without a criterion: it cannot train")
        targets = [self.prepare_target(x, size) for x, size in zip(batched_inputs, images.image_sizes)]
        answers = None
        if self.qa_head is not None:
            keys = batched_inputs[0]["answers"].keys()
            answers = {k: torch.stack([torch.as_tensor(x["answers"][k]) for x in batched_inputs]).to(self.device)
                       for k in keys}
        loss_dict = self.criterion(outputs, targets, answers)
        weights = self.criterion.weight_dict
        metrics = {k: v for k, v in loss_dict.items() if k not in weights}
        if metrics:
            get_event_storage().put_scalars(**{k: float(v) for k, v in metrics.items()})
        return {k: v * weights[k] for k, v in loss_dict.items() if k in weights}

    def prepare_target(self, x: dict, image_size: tuple[int, int]) -> dict:
        """A mapper output's ``instances`` as the criterion's target dict (normalised cxcywh boxes;
        the spans stay the mapper's padded tensor, read only by the official fallback lookup)."""
        inst = x["instances"].to(self.device)
        h, w = image_size
        boxes = inst.gt_boxes.tensor / torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
        target = {
            "boxes": box_convert(boxes, "xyxy", "cxcywh"),
            "positive_map": inst.gt_positive_map.float(),
        }
        if inst.has("gt_tokens_positive"):
            target["tokens_positive"] = inst.gt_tokens_positive
        if inst.has("gt_masks"):
            target["masks"] = inst.gt_masks.tensor
        if inst.has("gt_isfinal"):
            target["isfinal"] = inst.gt_isfinal.float()
        return target

    def inference(self, outputs: dict, images: ImageList, batched_inputs: list[dict],
                  captions: list[str] | None = None) -> list[dict]:
        """Per-image results of a grounded batch (``captions`` default to the inputs' ones)."""
        return grounded_results(
            outputs, images.image_sizes, tuple(images.tensor.shape[-2:]), batched_inputs,
            captions if captions is not None else [x["caption"] for x in batched_inputs],
            self.mask_threshold, self.qa_head_name if self.qa_head is not None else "none",
            self.qa_vocab,
        )

    # ----------------------------------------------------------------------------------------------
    # Class prompts
    def encoded_class_prompts(self, names: Sequence[str]) -> tuple[ClassPrompts, list[EncodedText]]:
        """The prompts of ``names`` (in the configured style) and each chunk's encoded text.

        Built once per class list and reused for every image while the text encoder's weights (any
        in-place update or load bumps a parameter's version), device, dtype, train/eval mode and
        autocast state stay the same; otherwise encoded again.
        """
        s = self.class_prompts
        key = (tuple(names), s.style, s.chunk_size, s.max_prompt_tokens)
        state = self._text_encoder_state()
        entry = self._prompt_cache.get(key)
        if entry is not None and entry[0] == state:
            self._prompt_cache.move_to_end(key)
            return entry[1]
        prompts = build_class_prompts(s, names, self.text_encoder.tokenizer,
                                      caption_token_limit(self.text_encoder.body.config))
        with torch.no_grad():
            texts = [self.encode_text(chunk.captions) for chunk in prompts.chunks]
        logger.info("encoded %d class names as %d %s prompts in %d chunks", len(names),
                    sum(len(c.captions) for c in prompts.chunks), s.style, len(prompts.chunks))
        self._prompt_cache[key] = (state, (prompts, texts))
        self._prompt_cache.move_to_end(key)
        while len(self._prompt_cache) > _PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return prompts, texts

    def _text_encoder_state(self) -> tuple:
        kind = self.device.type
        amp = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        weights = tuple((p.data_ptr(), p.dtype, p._version) for p in self.text_encoder.parameters())
        return str(self.device), self.text_encoder.training, amp, weights

    def detect_classes(self, x: dict, names: Sequence[str]) -> dict:
        """Detect the classes ``names`` on one input image (``image`` [, ``height``, ``width``]).

        The image is encoded once; the cross-encoder and decoder run once per prompt chunk with the
        cached prompt encodings. Returns ``{"instances": ..., "all_instances": ...}`` in original
        pixels: ``all_instances`` holds every detection (per_class: classes × queries, in class
        order, as the official LVIS evaluation) with ``pred_boxes``, ``scores`` and ``pred_classes``
        (indices into ``names``); ``instances`` the ``detections_per_image`` best of them, by score,
        with the phrase fields too.
        """
        prompts, texts = self.encoded_class_prompts(names)
        # One image at a time, unpadded: the official evaluation runs with batch size 1.
        images = self.preprocess_image([x])
        image = self.encode_image(images.tensor, self.padding_mask(images))
        outputs = []
        for chunk, text in zip(prompts.chunks, texts):
            out = self.decode(self.encode(image.expand(len(chunk.captions)), None, text),
                              boxes_only=True)
            outputs.append((out["pred_logits"], out["pred_boxes"]))
        size = (x.get("height", images.image_sizes[0][0]), x.get("width", images.image_sizes[0][1]))
        return class_prompt_results(prompts, outputs, size, self.detections_per_image)

