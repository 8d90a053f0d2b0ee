"""``MDETRDatasetMapper``: one dataset dict -> the model's input dict (image, caption, targets)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from typing import Any, Iterator

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import (
    BitMasks,
    Boxes,
    BoxMode,
    Instances,
    PolygonMasks,
    polygons_to_bitmask,
)
from detectron2.utils.logger import log_first_n
from pycocotools import mask as mask_util

from ..structures.positive_map import create_positive_map
from ..structures.qa import answer_family, encode_clevr_answer, encode_gqa_answer, read_answer2id
from ..structures.spans import spans_to_tensor
from ..structures.tokenizer import (
    MAX_TOKEN_SLOTS,
    build_tokenizer,
    encode_caption,
    max_caption_tokens,
)
from .transforms import CaptionHFlipTransform, build_augmentation_from_config

logger = logging.getLogger(__name__)

__all__ = ["BadRecordError", "MDETRDatasetMapper", "describe_record"]

# Image-level fields copied to the output when present: the evaluators need the ids, and the QA
# evaluators the ground-truth answer string (its encoded form is in ``answers``).
_PASSTHROUGH_KEYS = (
    "dataset_name",
    "original_id",
    "original_img_id",
    "sentence_id",
    "task_id",
    "questionId",
    "question_type",
    "answer",
)


class BadRecordError(ValueError):
    """A dataset record whose data cannot be read or encoded (corrupt image, caption the text
    encoder cannot take, ...). The message names the record and the field; training may skip such
    a record (``mdetr_d2.data.TrainDataStream``), evaluation never does."""


def describe_record(d: dict) -> str:
    """``record image_id=... (file) [dataset ...]``: how messages name a dataset record."""
    where = f"record image_id={d.get('image_id')!r} ({d.get('file_name')})"
    if d.get("dataset_name"):
        where += f" of dataset {d['dataset_name']!r}"
    return where


@contextlib.contextmanager
def _reading(d: dict, field: str) -> Iterator[None]:
    """Turn any failure to read or encode ``field`` of record ``d`` into a ``BadRecordError``."""
    try:
        yield
    except BadRecordError:
        raise
    except Exception as e:
        raise BadRecordError(
            f"{describe_record(d)}: field {field!r}: {type(e).__name__}: {e}"
        ) from e


def _annotation_boxes_xyxy(annotations: list[dict]) -> np.ndarray:
    if not annotations:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray(
        [
            BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
            for a in annotations
        ],
        dtype=np.float64,
    ).reshape(-1, 4)


def _clip_and_keep(boxes: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Clamp xyxy boxes to the image; keep those with positive width and height (official §5.2, §6.1)."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, keep


def _rasterize(segm: Any, h: int, w: int) -> np.ndarray:
    """uint8 mask of one annotation's polygons (OR-ed) or RLE, at the original image size."""
    if not segm:
        return np.zeros((h, w), dtype=np.uint8)
    if isinstance(segm, dict):
        if isinstance(segm.get("counts"), list):
            segm = mask_util.frPyObjects(segm, h, w)
        return mask_util.decode(segm).astype(np.uint8)
    polygons = [np.asarray(p, dtype=np.float64).reshape(-1) for p in segm if len(p) >= 6]
    if not polygons:
        return np.zeros((h, w), dtype=np.uint8)
    return polygons_to_bitmask(polygons, h, w).astype(np.uint8)


class MDETRDatasetMapper:
    """Reads the image, augments it (MDETR chains), and builds the targets of one image-caption record.

    Output dict (tensors, plus the caption and the id strings):

    * ``image``: ``3 x H x W`` uint8 tensor in ``image_format`` (as Detectron2's ``DatasetMapper``);
    * ``height``, ``width``: the original image size (what predictions are rescaled to);
    * ``image_id``, ``file_name``, ``caption`` (after augmentation; only the text-aware flip changes it)
      and, when present in the record, ``dataset_name``, ``original_id``, ``original_img_id``,
      ``sentence_id``, ``task_id``, ``questionId``, ``question_type`` and ``answer`` (the raw
      answer string the QA evaluators compare with);
    * ``instances`` (when the record has ``annotations``; training and evaluation): ``Instances`` of the
      augmented image size with ``gt_boxes`` (``Boxes``, XYXY absolute), ``gt_classes`` (category ids,
      unused by MDETR's losses), and, for records with a caption, ``gt_positive_map``
      (``n x MAX_TOKEN_SLOTS`` float 0/1) and ``gt_tokens_positive`` (``n x S x 2`` int64 ``[begin,
      end)`` spans padded with -1, see :func:`mdetr_d2.structures.tensor_to_spans`), plus
      ``gt_isfinal`` (float, CLEVR-Ref+)
      and ``gt_masks`` (``BitMasks``/``PolygonMasks``, when masks are on). Fields stay aligned with the
      boxes under any ``Instances`` indexing;
    * ``positive_map_eval``: ``n_phrases x MAX_TOKEN_SLOTS`` bool (records with ``tokens_positive_eval``);
    * ``answers``: dict of 0-d tensors (QA on and the record has an ``answer``): GQA ``answer``,
      ``answer_type`` (obj 0, attr 1, rel 2, global 3, cat 4), ``answer_{obj,attr,rel,global,cat}``
      (-100 for the other types); CLEVR ``answer_type`` (binary 0, attribute 1, number 2),
      ``answer_binary`` (float), ``answer_attr``, ``answer_reg`` (-100 when unused).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str = "RGB",
        tokenizer_name: str | None = None,
        max_token_slots: int = MAX_TOKEN_SLOTS,
        use_masks: bool = False,
        mask_format: str = "bitmask",
        qa_kind: str | None = None,
        gqa_answer_vocab: str | None = None,
        gqa_answer_vocab_by_type: str | None = None,
    ):
        """
        Args:
            is_train: training mode (only used in messages; the augmentations decide the behaviour).
            augmentations: Detectron2 augmentations, e.g. from :func:`build_mdetr_augmentation`.
            image_format: ``read_image`` format ("RGB" for MDETR).
            tokenizer_name: HF name or folder of the fast tokenizer (``build_tokenizer``); needed for
                records with a caption.
            max_token_slots: width of the positive maps (256).
            use_masks: produce ``gt_masks``.
            mask_format: "bitmask" or "polygon".
            qa_kind: None, "gqa" or "clevr": the answers to encode from the records' ``answer``
                into ``answers`` (:func:`mdetr_d2.structures.qa.answer_family` of the QA head).
            gqa_answer_vocab: path of ``gqa_answer2id.json`` (or its folder).
            gqa_answer_vocab_by_type: path of ``gqa_answer2id_by_type.json`` (default: next to the former).
        """
        if mask_format not in ("bitmask", "polygon"):
            raise ValueError(f"mask_format must be 'bitmask' or 'polygon', got {mask_format!r}")
        if qa_kind not in (None, "gqa", "clevr"):
            raise ValueError(f"qa_kind must be None, 'gqa' or 'clevr', got {qa_kind!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.tokenizer_name = tokenizer_name
        self.max_token_slots = max_token_slots
        self.use_masks = use_masks
        self.mask_format = mask_format
        self.qa_kind = qa_kind
        if gqa_answer_vocab and os.path.isdir(gqa_answer_vocab):
            gqa_answer_vocab = os.path.join(gqa_answer_vocab, "gqa_answer2id.json")
        if gqa_answer_vocab and not gqa_answer_vocab_by_type:
            gqa_answer_vocab_by_type = os.path.join(
                os.path.dirname(gqa_answer_vocab), "gqa_answer2id_by_type.json"
            )
        self.gqa_answer_vocab = gqa_answer_vocab
        self.gqa_answer_vocab_by_type = gqa_answer_vocab_by_type
        self._gqa_vocabs = None  # loaded on first use (workers read them, not the constructor)
        mode = "training" if is_train else "inference"
        logger.info(f"[MDETRDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        m = cfg.MODEL.MDETR
        qa_kind = answer_family(m.QA_HEAD)
        vocab = by_type = None
        if qa_kind == "gqa":
            for name in cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST:
                meta = MetadataCatalog.get(name)
                if hasattr(meta, "gqa_answer_vocab"):
                    vocab = meta.gqa_answer_vocab
                    by_type = getattr(meta, "gqa_answer_vocab_by_type", None)
                    break
            vocab = vocab or m.QA_VOCAB or None
        return {
            "is_train": is_train,
            "augmentations": build_augmentation_from_config(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "tokenizer_name": m.TEXT_ENCODER.NAME,
            "max_token_slots": cfg.INPUT.MDETR.MAX_TOKEN_SLOTS,
            "use_masks": m.MASKS,
            "mask_format": cfg.INPUT.MASK_FORMAT,
            "qa_kind": qa_kind,
            "gqa_answer_vocab": vocab,
            "gqa_answer_vocab_by_type": by_type,
        }

    # Built lazily so that pickling the mapper to data-loader workers only sends the name.
    @property
    def tokenizer(self):
        if not self.tokenizer_name:
            raise ValueError("MDETRDatasetMapper needs tokenizer_name to build positive maps")
        return build_tokenizer(self.tokenizer_name)

    @property
    def max_caption_tokens(self) -> int | None:
        """Most tokens a caption may have for the text encoder ``tokenizer_name`` names."""
        return max_caption_tokens(self.tokenizer_name)

    def _read_image(self, d: dict) -> np.ndarray:
        with _reading(d, "file_name"):
            try:
                image = utils.read_image(d["file_name"], format=self.image_format)
            except FileNotFoundError:
                raise FileNotFoundError(
                    "image not found: check the dataset's image root ($MDETR_DATASETS, "
                    "datasets/README.md)"
                ) from None
        h, w = image.shape[:2]
        if (d.get("height"), d.get("width")) != (h, w):
            # The official code trusts the image, not the json (Flickr stores sizes as XML strings).
            log_first_n(
                logging.WARNING,
                f"{describe_record(d)}: json size {d.get('width')}x{d.get('height')} differs from "
                f"the image {w}x{h}; using the image size",
                n=5,
            )
        return image

    def _load_gqa_vocabs(self):
        if self._gqa_vocabs is None:
            vocabs = []
            for path in (self.gqa_answer_vocab, self.gqa_answer_vocab_by_type):
                if path and os.path.isfile(path):
                    vocabs.append(read_answer2id(path))
                else:
                    vocabs.append(None)
            if vocabs == [None, None]:
                raise FileNotFoundError(
                    f"GQA answer vocabularies not found ({self.gqa_answer_vocab}, "
                    f"{self.gqa_answer_vocab_by_type}); set the dataset metadata 'gqa_answer_vocab'"
                )
            self._gqa_vocabs = tuple(vocabs)
        return self._gqa_vocabs

    def _answers(self, d: dict) -> dict | None:
        if self.qa_kind is None or "answer" not in d:
            return None
        if self.qa_kind == "clevr":
            return encode_clevr_answer(d["answer"])
        answer2id, by_type = self._load_gqa_vocabs()
        return encode_gqa_answer(d["answer"], d.get("question_type"), answer2id, by_type)

    def __call__(self, dataset_dict: dict) -> dict:
        """Map one record; every error names it.

        Raises:
            BadRecordError: the record's image, caption, spans, masks or answer cannot be read or
                encoded (the message names the record and the field).
            RuntimeError: any other failure, naming the record (the original error is its cause).
        """
        try:
            return self._map(dataset_dict)
        except BadRecordError:
            raise
        except Exception as e:
            raise RuntimeError(
                f"{describe_record(dataset_dict)}: mapping failed: {type(e).__name__}: {e}"
            ) from e

    def _map(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)  # the loader's dicts are shared (and reused every epoch)
        image = self._read_image(d)
        h0, w0 = image.shape[:2]
        caption = d.get("caption")

        annotations = d.pop("annotations", None)
        anns = [a for a in annotations or () if a.get("iscrowd", 0) == 0]
        # Official order (§5.2, §6.1): boxes are clamped to the image and empty ones dropped before
        # augmenting (RandomSizeCrop keeps the boxes it is given), and again after.
        boxes, keep = _clip_and_keep(_annotation_boxes_xyxy(anns), h0, w0)
        anns = [a for a, k in zip(anns, keep) if k]
        boxes = boxes[keep]

        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        # All boxes at once (Detectron2's transform_instance_annotations goes one annotation at a
        # time: ~10x slower for 100 boxes).
        boxes, keep = _clip_and_keep(
            np.asarray(aug_input.boxes, dtype=np.float64).reshape(-1, 4), h, w
        )

        spans = [a.get("tokens_positive", []) for a in anns]
        eval_spans = d.get("tokens_positive_eval")
        if caption is not None:
            for tfm in transforms.transforms:
                # isinstance, not hasattr: Detectron2's NoOpTransform answers every `apply_*` name.
                if isinstance(tfm, CaptionHFlipTransform):
                    groups = spans + (eval_spans or [])
                    caption, groups = tfm.apply_caption(caption, groups)
                    spans, eval_spans = groups[: len(spans)], (
                        groups[len(spans) :] if eval_spans is not None else None
                    )

        out = {
            "file_name": d["file_name"],
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "height": h0,
            "width": w0,
            "image_id": d["image_id"],
        }
        if caption is not None:
            out["caption"] = caption
        for key in _PASSTHROUGH_KEYS:
            if key in d:
                out[key] = d[key]

        tokenized = None
        if caption is not None and (self.tokenizer_name or anns or eval_spans is not None):
            tokenizer = self.tokenizer  # outside _reading: a missing tokenizer is not the record's
            # Every caption, boxes or not: one the text encoder cannot take fails here, naming the
            # record, instead of in the model's batch.
            with _reading(d, "caption"):
                tokenized = encode_caption(tokenizer, caption, self.max_caption_tokens)

        if annotations is not None:
            instances = Instances((h, w))
            instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
            instances.gt_classes = torch.as_tensor(
                [int(a.get("category_id", 1)) for a in anns], dtype=torch.int64
            )
            if caption is not None:
                # Computed on the final caption: identical to the official "before augmentation" map
                # unless the text-aware flip rewrote the caption (then the spans were re-derived).
                with _reading(d, "tokens_positive"):
                    instances.gt_positive_map = (
                        create_positive_map(tokenized, spans, self.max_token_slots, caption=caption)
                        if anns
                        else torch.zeros((0, self.max_token_slots), dtype=torch.float32)
                    )
                    instances.gt_tokens_positive = spans_to_tensor(spans)
            if anns and all("isfinal" in a for a in anns):
                instances.gt_isfinal = torch.as_tensor(
                    [float(a["isfinal"]) for a in anns], dtype=torch.float32
                )
            if self.use_masks:
                with _reading(d, "segmentation"):
                    instances.gt_masks = self._masks(anns, transforms, h0, w0, h, w)
            # Boxes a crop emptied go, with every field.
            out["instances"] = instances[torch.from_numpy(keep)] if len(keep) else instances

        if eval_spans is not None:
            with _reading(d, "tokens_positive_eval"):
                out["positive_map_eval"] = create_positive_map(
                    tokenized, eval_spans, self.max_token_slots, caption=caption
                ).bool()

        with _reading(d, "answer"):
            answers = self._answers(d)
        if answers is not None:
            out["answers"] = answers
        return out

    def _masks(self, anns, transforms, h0, w0, h, w):
        if self.mask_format == "polygon" and all(
            isinstance(a.get("segmentation"), list) and a["segmentation"] for a in anns
        ):
            # Vertices are moved without clipping to a crop window (fvcore's clipping needs shapely);
            # rasterizing an unclipped polygon gives the same mask inside the image.
            polygons = [
                [
                    transforms.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(
                        -1
                    )
                    for p in a["segmentation"]
                ]
                for a in anns
            ]
            return PolygonMasks(polygons)
        # Rasterize at the original size, then resize/crop/flip like the image (official order, §5.2).
        masks = [
            transforms.apply_segmentation(_rasterize(a.get("segmentation"), h0, w0)) for a in anns
        ]
        if not masks:
            return BitMasks(torch.zeros((0, h, w), dtype=torch.bool))
        return BitMasks(torch.as_tensor(np.stack(masks)) > 0)
