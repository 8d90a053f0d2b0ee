"""Flickr30k Entities phrase grounding recall@k (reference §4.2, §7.4).

The ground truth is read from the original Flickr30k Entities folder (``Annotations/<id>.xml``,
``Sentences/<id>.txt``, ``<subset>.txt``) with our own parsers, not from the MDETR json.
"""
import logging
import re
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from torchvision.ops import box_iou

from .common import first_hit_rank, gather_dicts_to_main, log_grid, to_numpy

logger = logging.getLogger(__name__)

__all__ = [
    "FlickrPhrase",
    "FlickrEntitiesGroundTruth",
    "FlickrEvaluator",
    "parse_flickr_sentences",
    "parse_flickr_boxes",
    "rank_boxes_per_phrase",
    "flickr_phrase_first_hits",
    "flickr_recalls",
]

PROTOCOLS = ("any_box", "merged_box")
# Metadata ``flickr_gt_type`` (the boxes the model was trained on) -> its official protocol.
GT_TYPES = {"separate": "any_box", "merged": "merged_box"}

# "[/EN#123/people/other" opens an annotated phrase: entity id, then one or more coarse types.
_PHRASE_OPEN = re.compile(r"^\[/EN#([^/\s]+)((?:/[^/\s]+)*)$")


@dataclass
class FlickrPhrase:
    """One annotated phrase of a Flickr30k Entities sentence."""

    entity_id: str
    types: List[str]
    first_word_index: int
    text: str


def parse_flickr_sentences(path) -> List[List[FlickrPhrase]]:
    """Parse ``Sentences/<id>.txt``: one list of phrases per non-empty line, in sentence order.

    A phrase starts at a token ``[/EN#<entity>/<type>[/<type>...]`` and ends at the first following token
    that ends with ``]``. Words are counted without the opening markers, so ``first_word_index`` indexes the
    plain sentence.
    """
    sentences = []
    for line in Path(path).read_text().split("\n"):
        if not line:
            continue
        phrases: List[FlickrPhrase] = []
        n_words = 0
        current: Optional[FlickrPhrase] = None
        words: List[str] = []
        for token in line.split():
            if current is None:
                m = _PHRASE_OPEN.match(token) if token.startswith("[") else None
                if m is None:
                    n_words += 1
                    continue
                types = [t for t in m.group(2).split("/") if t]
                current = FlickrPhrase(m.group(1), types, n_words, "")
                words = []
                continue
            closing = token.endswith("]")
            word = token[:-1] if closing else token
            words.append(word)
            n_words += 1
            if closing:
                current.text = " ".join(words)
                phrases.append(current)
                current = None
        sentences.append(phrases)
    return sentences


def parse_flickr_boxes(path) -> Dict[str, List[List[int]]]:
    """Parse ``Annotations/<id>.xml`` into ``{entity id: [[xmin, ymin, xmax, ymax], ...]}``.

    An ``<object>`` with several ``<name>`` children gives its box to each of those entities; objects
    without ``<bndbox>`` (scene, not-visible) give none, so their entities are absent from the result.
    """
    root = ET.parse(str(path)).getroot()
    boxes: Dict[str, List[List[int]]] = {}
    for obj in root.findall("object"):
        bnd = obj.find("bndbox")
        if bnd is None:
            continue
        box = [int(bnd.find(tag).text) for tag in ("xmin", "ymin", "xmax", "ymax")]
        for name in obj.findall("name"):
            boxes.setdefault(name.text.strip(), []).append(list(box))
    return boxes


def _enclosing_box(boxes: Sequence[Sequence[float]]) -> List[List[float]]:
    """MERGED-BOX ground truth: the smallest box containing all boxes of the entity."""
    if len(boxes) == 1:
        return [list(boxes[0])]
    b = np.asarray(boxes)
    return [[b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]]


@dataclass
class _GTPhrase:
    types: List[str]
    boxes: Dict[str, np.ndarray] = field(default_factory=dict)  # protocol -> (n, 4) xyxy


class FlickrEntitiesGroundTruth:
    """Ground truth of one Flickr30k Entities subset: the phrases to evaluate per (image, sentence).

    Phrases whose entity has no box are dropped; sentences left without phrases are not evaluated.
    """

    def __init__(self, entities_dir, subset: str = "val"):
        root = Path(entities_dir)
        split_file = root / f"{subset}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"Flickr30k Entities split list {split_file} not found")
        self.subset = subset
        self.image_ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        # (image id, sentence index) -> phrases to evaluate; None when the sentence has none.
        self.sentences: Dict[Tuple[str, int], Optional[List[_GTPhrase]]] = {}
        for img in self.image_ids:
            xml = root / "Annotations" / f"{img}.xml"
            txt = root / "Sentences" / f"{img}.txt"
            for p in (xml, txt):
                if not p.is_file():
                    raise FileNotFoundError(f"Flickr30k Entities image {img} of {split_file.name}: {p} missing")
            boxes = parse_flickr_boxes(xml)
            for s_idx, phrases in enumerate(parse_flickr_sentences(txt)):
                kept = []
                for ph in phrases:
                    if ph.entity_id not in boxes:
                        continue
                    ent = boxes[ph.entity_id]
                    kept.append(
                        _GTPhrase(
                            ph.types,
                            {
                                "any_box": np.asarray(ent, dtype=np.float64),
                                "merged_box": np.asarray(_enclosing_box(ent), dtype=np.float64),
                            },
                        )
                    )
                self.sentences[(img, s_idx)] = kept or None

    @property
    def evaluated_keys(self) -> List[Tuple[str, int]]:
        return [k for k, v in self.sentences.items() if v is not None]

    def check_key(self, image_id, sentence_id) -> Tuple[str, int]:
        key = (str(image_id), int(sentence_id))
        if key not in self.sentences:
            known = any(k[0] == key[0] for k in self.sentences)
            what = f"sentence {key[1]} of image {key[0]}" if known else f"image {key[0]}"
            raise KeyError(
                f"Flickr30k Entities ({self.subset}): {what} is not in the ground truth; is the Entities folder "
                f"or subset the one the dataset was built from?"
            )
        return key


def rank_boxes_per_phrase(token_probs, boxes, positive_map) -> List[np.ndarray]:
    """Rank all Q boxes for every phrase (reference §4.2).

    Score of query q for phrase φ = max over φ's tokens t of ``token_probs[q, t]`` (softmax probabilities,
    no-object slot included in the normalization); boxes sorted by decreasing score.

    Args:
        token_probs: ``(Q, 256)`` probabilities.
        boxes: ``(Q, 4)`` xyxy in original pixels.
        positive_map: ``(P, 256)`` phrase→token map (binarized at 1e-6 like the official collate).

    Returns:
        list of P arrays ``(Q, 4)``, the boxes in rank order.
    """
    probs = torch.as_tensor(token_probs).float()
    boxes = torch.as_tensor(to_numpy(boxes, np.float32))
    pos = torch.as_tensor(positive_map)
    pos = (pos > 1e-6) if pos.dtype != torch.bool else pos
    ranked = []
    for row in pos:
        scores = (probs * row[None, :].to(probs.dtype)).max(dim=-1).values
        order = torch.sort(scores, descending=True, stable=True).indices
        ranked.append(boxes[order].numpy())
    return ranked


def flickr_phrase_first_hits(
    ranked_boxes: Sequence, gt_phrases: Sequence[_GTPhrase], iou_thresh: float = 0.5
) -> Dict[str, List[int]]:
    """For each protocol, the rank of the first box with IoU ≥ thresh with a GT box of each phrase."""
    out: Dict[str, List[int]] = {p: [] for p in PROTOCOLS}
    for boxes, ph in zip(ranked_boxes, gt_phrases):
        # Plain IoU, continuous coordinates (no +1), in float64 like the official numpy code.
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        for proto in PROTOCOLS:
            if len(boxes) == 0:
                out[proto].append(-1)
                continue
            ious = box_iou(boxes, torch.from_numpy(ph.boxes[proto]))
            out[proto].append(first_hit_rank((ious.max(dim=1).values >= iou_thresh).tolist()))
    return out


def flickr_recalls(
    gt: FlickrEntitiesGroundTruth,
    first_hits: Mapping[Tuple[str, int], Dict[str, List[int]]],
    protocol: str,
    topk: Sequence[int] = (1, 5, 10, -1),
) -> "OrderedDict[str, OrderedDict[str, float]]":
    """Recall per k (``-1`` = upper bound) and per phrase type (plus ``all``).

    A phrase with several types counts in each of them. Raises when a sentence to evaluate has no prediction.
    """
    missing = [k for k in gt.evaluated_keys if k not in first_hits]
    if missing:
        desc = ", ".join(f"{i}_{s}" for i, s in missing[:10])
        raise RuntimeError(f"Flickr30k Entities ({gt.subset}): no prediction for {len(missing)} sentence(s): {desc}")
    hits: Dict[int, Dict[str, List[bool]]] = {k: OrderedDict(all=[]) for k in topk}
    for key in gt.evaluated_keys:
        phrases = gt.sentences[key]
        for ph, r in zip(phrases, first_hits[key][protocol]):
            for k in topk:
                ok = r >= 0 and (k < 0 or r < k)
                for cat in ["all"] + list(ph.types):
                    hits[k].setdefault(cat, []).append(ok)
    report: "OrderedDict[str, OrderedDict[str, float]]" = OrderedDict()
    for k in topk:
        name = "Upper_bound" if k < 0 else f"R@{k}"
        report[name] = OrderedDict((cat, float(np.mean(v))) for cat, v in sorted(hits[k].items()))
    return report


class FlickrEvaluator(DatasetEvaluator):
    """Flickr30k Entities recall@1/5/10 and upper bound, ANY-BOX and MERGED-BOX protocols.

    Results: ``{"flickr": {"<protocol>/R@k_<type>": ...}}`` with protocol ``any_box`` (official with
    separateGT models) and ``merged_box`` (official with mergedGT models), k ∈ 1, 5, 10, ``Upper_bound``,
    type ``all`` or a phrase type. Both protocols are always computed; ``protocol`` only chooses which one is
    logged first and copied to the unprefixed ``R@k_<type>`` keys.

    Inputs read: ``original_img_id``, ``sentence_id``, ``positive_map_eval``. Outputs read:
    ``instances.token_probs``, ``instances.pred_boxes``. Alternatively an output may carry
    ``"flickr_ranked_boxes"``: a list (one per phrase) of boxes already in rank order.
    """

    def __init__(
        self,
        dataset_name: str,
        entities_dir: Optional[str] = None,
        subset: Optional[str] = None,
        protocol: Optional[str] = None,
        *,
        ground_truth: Optional[FlickrEntitiesGroundTruth] = None,
        topk: Sequence[int] = (1, 5, 10, -1),
        iou_thresh: float = 0.5,
    ):
        """
        Args:
            dataset_name: registered dataset name.
            entities_dir: Flickr30k Entities folder; default metadata ``flickr_entities_dir``.
            subset: ``val`` / ``test`` (the split list ``<entities_dir>/<subset>.txt``); default metadata
                ``flickr_split``.
            protocol: ``any_box`` or ``merged_box``; default from metadata ``flickr_gt_type``
                (``separate`` → any_box, ``merged`` → merged_box).

        Raises:
            ValueError: a value is neither given nor in the metadata (never guessed from the name: a
                wrong guess would score with the wrong protocol without a word).
        """
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name

        def required(value, key: str, what: str):
            if value is None:
                value = getattr(meta, key, None)
            if value is None:
                raise ValueError(
                    f"{dataset_name}: the Flickr evaluator needs metadata {key!r} ({what}); register the "
                    "dataset with flickr_entities_dir, flickr_split and flickr_gt_type (datasets/README.md)"
                )
            return value

        if ground_truth is None:
            entities_dir = required(entities_dir, "flickr_entities_dir", "the Flickr30k Entities folder")
            subset = required(subset, "flickr_split", "'val' or 'test'")
            ground_truth = FlickrEntitiesGroundTruth(entities_dir, subset)
        self._gt = ground_truth
        if protocol is None:
            gt_type = required(None, "flickr_gt_type", "'separate' or 'merged'")
            if gt_type not in GT_TYPES:
                raise ValueError(f"{dataset_name}: flickr_gt_type must be one of {GT_TYPES}, got {gt_type!r}")
            protocol = GT_TYPES[gt_type]
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol}")
        self._protocol = protocol
        self._topk = tuple(topk)
        self._thresh = iou_thresh
        self._first_hits: Dict[Tuple[str, int], Dict[str, List[int]]] = {}

    def reset(self):
        self._first_hits = {}

    def add_ranked(self, image_id, sentence_id, ranked_boxes: Sequence) -> None:
        """Record one sentence given its ranked boxes per phrase (official prediction format)."""
        key = self._gt.check_key(image_id, sentence_id)
        phrases = self._gt.sentences[key]
        if phrases is None:
            # Official behaviour: sentences without any box-able phrase are not evaluated.
            if len(ranked_boxes):
                logger.warning("Flickr: ignoring predictions for sentence %s of image %s", key[1], key[0])
            return
        if len(ranked_boxes) != len(phrases):
            raise RuntimeError(
                f"Flickr: got {len(ranked_boxes)} phrase predictions, expected {len(phrases)} for sentence "
                f"{key[1]} of image {key[0]}"
            )
        if key in self._first_hits:
            return  # sampler padding repeats a datapoint: first one wins
        self._first_hits[key] = flickr_phrase_first_hits(ranked_boxes, phrases, self._thresh)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "flickr_ranked_boxes" in out:
                ranked = out["flickr_ranked_boxes"]
            else:
                inst = out["instances"]
                pos = inp.get("positive_map_eval")
                if pos is None:
                    raise KeyError(f"Flickr: input {inp.get('image_id')} has no 'positive_map_eval'")
                ranked = rank_boxes_per_phrase(inst.token_probs.detach().cpu(), inst.pred_boxes, pos.cpu())
            self.add_ranked(inp["original_img_id"], inp["sentence_id"], ranked)

    def evaluate(self):
        first_hits = gather_dicts_to_main(self._first_hits)
        if first_hits is None:
            return {}
        return self.compute(first_hits)

    def compute(self, first_hits) -> "OrderedDict[str, Dict[str, float]]":
        results: Dict[str, float] = OrderedDict()
        order = [self._protocol] + [p for p in PROTOCOLS if p != self._protocol]
        for proto in order:
            report = flickr_recalls(self._gt, first_hits, proto, self._topk)
            log_grid(f"{self._dataset_name}: Flickr30k Entities recall, {proto.upper()} protocol", report, "Recall@k")
            for k_name, per_cat in report.items():
                for cat, v in per_cat.items():
                    results[f"{proto}/{k_name}_{cat}"] = v
                    if proto == self._protocol:
                        results[f"{k_name}_{cat}"] = v
        return OrderedDict(flickr=results)
