"""A synthetic grounding world: coloured shapes on a plain background, captions in MDETR's format.

The generator exists so that the whole pipeline (data → training → evaluation → demo) runs on a CPU
in minutes with no download. Everything is deterministic from a seed: the same call writes
byte-identical PNGs and json files.

Each split has ``num_<split>`` scenes (one PNG each) with 2-5 non-overlapping objects; an object has
a shape, a colour and a size class. Three families of datapoints are written per split, in the
official MDETR annotation format (reference §5.1: one json "image" entry = one image-caption pair):

* ``synthetic_refexp_<split>.json`` (as RefCOCO, §5.3): a referring expression that singles out
  exactly one object ("the small red circle", "the square left of the green star", "the leftmost
  blue triangle"); one box, whose ``tokens_positive`` is the root noun phrase. The referred object
  is drawn uniformly among the objects of the scene, so a text-blind guess ("the largest object")
  is right only about 1/n of the time.
* ``synthetic_flickr_<split>.json`` (as Flickr30k Entities, §5.4): a multi-phrase caption ("two red
  circles and a blue square .") with one annotation per object and ``tokens_positive_eval`` per
  phrase. A phrase always covers every object of the scene that matches its words. The same
  captions are also written in the Flickr30k Entities layout (``flickr_entities/<split>/``) for the
  Flickr evaluator.
* ``synthetic_qa_<split>.json`` (as GQA QA, §5.6): a question with its ``answer``, ``questionId``
  and ``question_type`` (a GQA semantic type, so the GQA answer heads and vocabulary files work
  unchanged), plus ``question_family`` (exist / count / color / shape / size) and ``answer_type``
  (binary / attribute / number, the CLEVR answer families, §1.15); the objects the question
  mentions are annotated.

A fourth file, ``synthetic_detection_<split>.json``, is a plain COCO detection view of the same
scenes: one image entry per scene, every object annotated, its category the shape. It is registered
the Detectron2 way (``register_coco_instances``) and scored with Detectron2's ``COCOEvaluator``
(class-prompt detection over the shape names).

Object masks are written as COCO polygons (the exact polygons that were drawn).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

logger = logging.getLogger(__name__)

# Bump whenever the output for a given set of parameters changes (invalidates existing manifests).
GENERATOR_VERSION = 3
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
FAMILIES = ("refexp", "flickr", "qa")

SHAPES = ("circle", "square", "triangle", "star", "diamond")
# Saturated colours that stay distinct from the light background and from each other.
COLORS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 215),
    "yellow": (230, 195, 25),
    "purple": (135, 60, 175),
    "orange": (240, 125, 20),
}
SIZES = ("small", "large")
# Side of the object's bounding square in pixels, per size class (the gap keeps them separable).
SIZE_RANGES = {"small": (16, 22), "large": (28, 38)}
RELATIONS = ("left of", "right of", "above", "below")
SUPERLATIVES = ("leftmost", "rightmost", "topmost", "bottommost")
COUNT_WORDS = ("zero", "a", "two", "three", "four", "five")
# QA: each question family maps to a GQA semantic type (§5.6), whose answer head predicts it. GQA
# has no counting type; counts go to "global" (each type is just a separate classifier).
QA_GQA_TYPES = {"exist": "obj", "color": "attr", "size": "attr", "shape": "cat", "count": "global"}
# The same answers as the CLEVR answer families (§1.15): attributes fit the 15-way attribute head.
QA_ATTRIBUTES = SIZES + tuple(COLORS) + SHAPES
MAX_OBJECTS = 5

_ATTRIBUTE_KEYS = ("size", "color", "shape")  # word order inside a noun phrase
# Minimum distance, in pixels between object centres, for a spatial word to hold; a distractor must
# be at least this far on the wrong side, so no expression hinges on a few pixels.
_SPATIAL_MARGIN = 8.0
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    """One drawn object: its attributes and the polygon that was filled (image pixels)."""

    shape: str
    color: str
    size: str
    polygon: tuple[tuple[float, float], ...]
    fill: tuple[int, int, int]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """COCO ``[x, y, w, h]`` of the polygon."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2, y + h / 2)

    @property
    def area(self) -> float:
        """Polygon area (shoelace), the COCO ``area`` of its mask."""
        pts = np.asarray(self.polygon)
        x, y = pts[:, 0], pts[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)

    def attribute(self, key: str) -> str:
        return getattr(self, key)


@dataclass(frozen=True)
class Scene:
    """One image: its size, background colour and objects (drawn in this order)."""

    width: int
    height: int
    background: tuple[int, int, int]
    objects: tuple[SceneObject, ...]


def _shape_polygon(shape: str, cx: float, cy: float, side: float) -> list[tuple[float, float]]:
    """Vertices of a shape inscribed in the ``side``-wide square centred on (cx, cy)."""
    r = side / 2
    if shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
    elif shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "diamond":
        pts = [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    elif shape == "star":
        pts = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + radius * np.cos(a), cy + radius * np.sin(a)))
        # Re-centre vertically: the star's lowest vertices sit above the square's bottom edge.
        ys = [p[1] for p in pts]
        shift = cy - (min(ys) + max(ys)) / 2
        pts = [(x, y + shift) for x, y in pts]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [(round(float(x), 2), round(float(y), 2)) for x, y in pts]


def sample_scene(rng: np.random.Generator, min_side: int = 96, max_side: int = 128,
                 min_objects: int = 2, max_objects: int = MAX_OBJECTS) -> Scene:
    """Draw one scene: image size, background and 2-5 non-overlapping objects.

    Each scene draws its attributes from a small palette (2-3 shapes, 2-4 colours), so repeated
    shapes and colours are common: expressions then need colour, size or position words to single
    an object out, and counting questions have non-trivial answers.
    """
    width = int(rng.integers(min_side, max_side + 1))
    height = int(rng.integers(min_side, max_side + 1))
    background = tuple(int(v) for v in rng.integers(205, 241, size=3))
    n_shapes = int(rng.integers(2, 4))
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=n_shapes, replace=False)]
    color_names = list(COLORS)
    colors = [color_names[i] for i in rng.choice(len(COLORS), size=int(rng.integers(2, 5)),
                                                  replace=False)]
    wanted = int(rng.integers(min_objects, max_objects + 1))
    objects: list[SceneObject] = []
    boxes: list[tuple[float, float, float, float]] = []
    gap = 4.0
    for _ in range(wanted):
        shape = shapes[int(rng.integers(len(shapes)))]
        color = colors[int(rng.integers(len(colors)))]
        size = SIZES[int(rng.integers(len(SIZES)))]
        lo, hi = SIZE_RANGES[size]
        side = float(rng.integers(lo, hi + 1))
        for _attempt in range(100):
            cx = float(rng.uniform(side / 2 + 2, width - side / 2 - 2))
            cy = float(rng.uniform(side / 2 + 2, height - side / 2 - 2))
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            if all(box[2] + gap <= b[0] or b[2] + gap <= box[0] or box[3] + gap <= b[1]
                   or b[3] + gap <= box[1] for b in boxes):
                break
        else:
            continue  # no room left for this object: the scene keeps fewer objects
        jitter = rng.integers(-12, 13, size=3)
        fill = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(COLORS[color], jitter))
        boxes.append(box)
        polygon = tuple(_shape_polygon(shape, cx, cy, side))
        objects.append(SceneObject(shape, color, size, polygon, fill))
    if len(objects) < min_objects:
        return sample_scene(rng, min_side, max_side, min_objects, max_objects)
    return Scene(width, height, background, tuple(objects))


def render_scene(scene: Scene) -> Image.Image:
    """Fill every object's polygon on the background (RGB, no anti-aliasing: masks match pixels)."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw.polygon(list(obj.polygon), fill=obj.fill)
    return image


# --------------------------------------------------------------------------------------------------
# Language: descriptions, referring expressions and their resolution
# --------------------------------------------------------------------------------------------------
def _plural(noun: str) -> str:
    return noun + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Description:
    """A noun phrase without determiner: some of size, colour, shape ("object" when no shape)."""

    attrs: tuple[tuple[str, str], ...]  # (key, value) in _ATTRIBUTE_KEYS order

    @classmethod
    def of(cls, obj: SceneObject, keys: Sequence[str]) -> "Description":
        return cls(tuple((k, obj.attribute(k)) for k in _ATTRIBUTE_KEYS if k in keys))

    def matches(self, obj: SceneObject) -> bool:
        return all(obj.attribute(k) == v for k, v in self.attrs)

    def text(self, plural: bool = False) -> str:
        values = dict(self.attrs)
        noun = values.get("shape", "object")
        words = [values[k] for k in ("size", "color") if k in values]
        return " ".join(words + [_plural(noun) if plural else noun])

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.attrs)


def _spatial_value(word: str, a: SceneObject, b: SceneObject) -> float:
    """Signed distance saying how much ``a`` is ``word`` (a relation) of ``b``: positive = holds."""
    (ax, ay), (bx, by) = a.center, b.center
    return {"left of": bx - ax, "right of": ax - bx, "above": by - ay, "below": ay - by}[word]


def _superlative_key(word: str, obj: SceneObject) -> float:
    """Larger = more extreme in the superlative's direction."""
    x, y = obj.center
    return {"leftmost": -x, "rightmost": x, "topmost": -y, "bottommost": y}[word]


@dataclass(frozen=True)
class ReferringExpression:
    """``the [superlative] <desc> [<relation> the <anchor desc>]`` for ``scene.objects[target]``."""

    target: int
    desc: Description
    superlative: str | None = None
    relation: str | None = None
    anchor: int | None = None
    anchor_desc: Description | None = None

    def text(self) -> tuple[str, tuple[int, int], tuple[int, int] | None]:
        """The expression, the span of its root noun phrase, the span of the anchor (or None)."""
        words = ["the"] + ([self.superlative] if self.superlative else []) + [self.desc.text()]
        root = " ".join(words)
        if self.relation is None:
            return root, (0, len(root)), None
        anchor = "the " + self.anchor_desc.text()
        full = f"{root} {self.relation} {anchor}"
        return full, (0, len(root)), (len(full) - len(anchor), len(full))


def resolve(expr: ReferringExpression, scene: Scene) -> list[int]:
    """Indices of the objects the expression's words may denote.

    Spatial words are judged between object centres with a margin: an object within the margin of
    satisfying the relation (or of being the most extreme) stays a candidate, so an expression that
    hinges on a few pixels comes out ambiguous. An anchor phrase must match exactly one object.
    """
    objs = scene.objects
    candidates = [i for i, o in enumerate(objs) if expr.desc.matches(o)]
    if expr.relation is not None:
        anchors = [i for i, o in enumerate(objs) if expr.anchor_desc.matches(o)]
        if len(anchors) != 1:
            return candidates + [a for a in anchors if a not in candidates]
        a = anchors[0]
        candidates = [i for i in candidates if i != a
                      and _spatial_value(expr.relation, objs[i], objs[a]) > -_SPATIAL_MARGIN]
    if expr.superlative is not None and candidates:
        best = max(_superlative_key(expr.superlative, objs[i]) for i in candidates)
        candidates = [i for i in candidates
                      if _superlative_key(expr.superlative, objs[i]) > best - _SPATIAL_MARGIN]
    return candidates


def referent(expr: ReferringExpression, scene: Scene) -> int | None:
    """The single object the expression denotes, or None when it is ambiguous or empty."""
    candidates = resolve(expr, scene)
    if len(candidates) != 1:
        return None
    (i,) = candidates
    if expr.relation is not None:
        anchors = [a for a, o in enumerate(scene.objects) if expr.anchor_desc.matches(o)]
        if len(anchors) != 1 or anchors[0] == i:
            return None
        value = _spatial_value(expr.relation, scene.objects[i], scene.objects[anchors[0]])
        if value < _SPATIAL_MARGIN:
            return None  # the relation holds only within the margin
    return i


def _keysets(exclude: Sequence[str] = ()) -> list[tuple[str, ...]]:
    keys = [k for k in _ATTRIBUTE_KEYS if k not in exclude]
    return [c for n in range(1, len(keys) + 1) for c in itertools.combinations(keys, n)]


def referring_options(scene: Scene, target: int, exclude: Sequence[str] = ()
                      ) -> dict[str, list[ReferringExpression]]:
    """Every unambiguous expression for ``target``, by kind: "attribute" (minimal attribute sets),
    "overspecified" (attribute sets with a redundant word), "superlative" and "relation".

    Args:
        exclude: attribute keys that must not appear in the expression (a question asking for that
            attribute must not give it away, not even through the anchor).
    """
    objs = scene.objects
    t = objs[target]
    options: dict[str, list[ReferringExpression]] = {
        "attribute": [], "overspecified": [], "superlative": [], "relation": []}
    unique_sets: list[tuple[str, ...]] = []
    for keys in _keysets(exclude):
        expr = ReferringExpression(target, Description.of(t, keys))
        if referent(expr, scene) == target:
            unique_sets.append(keys)
    for keys in unique_sets:
        # Minimal among the sets naming the shape ("the red circle" even when "the red object" would
        # do), and among all sets for the shape-less ones.
        rivals = [o for o in unique_sets if "shape" in o] if "shape" in keys else unique_sets
        minimal = not any(set(other) < set(keys) for other in rivals)
        kind = "attribute" if minimal else "overspecified"
        options[kind].append(ReferringExpression(target, Description.of(t, keys)))
    for keys in _keysets(exclude):
        desc = Description.of(t, keys)
        if sum(desc.matches(o) for o in objs) < 2:
            continue  # a superlative or relation only makes sense among several candidates
        for word in SUPERLATIVES:
            expr = ReferringExpression(target, desc, superlative=word)
            if referent(expr, scene) == target:
                options["superlative"].append(expr)
        for a, anchor in enumerate(objs):
            if a == target:
                continue
            for anchor_keys in _keysets(exclude):
                anchor_desc = Description.of(anchor, anchor_keys)
                if sum(anchor_desc.matches(o) for o in objs) != 1:
                    continue
                if any(set(k) < set(anchor_keys) and
                       sum(Description.of(anchor, k).matches(o) for o in objs) == 1
                       for k in _keysets(exclude)):
                    continue  # anchors use a minimal description, as people do
                for word in RELATIONS:
                    expr = ReferringExpression(target, desc, relation=word, anchor=a,
                                               anchor_desc=anchor_desc)
                    if referent(expr, scene) == target:
                        options["relation"].append(expr)
    return options


# How often each kind of referring expression is picked when available.
_KIND_WEIGHTS = {"attribute": 3.0, "overspecified": 1.0, "superlative": 1.5, "relation": 2.5}


def _choose_expression(rng: np.random.Generator, options: dict[str, list[ReferringExpression]]
                       ) -> ReferringExpression | None:
    kinds = [k for k in _KIND_WEIGHTS if options[k]]
    if not kinds:
        return None
    weights = np.array([_KIND_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    return options[kind][int(rng.integers(len(options[kind])))]


# --------------------------------------------------------------------------------------------------
# Datapoints (one json "image" entry + its annotations each)
# --------------------------------------------------------------------------------------------------
@dataclass
class Datapoint:
    """One caption of a scene, the objects it grounds and the extra image-level json fields."""

    caption: str
    boxes: list[tuple[int, list[list[int]]]]  # (object index, tokens_positive)
    extra: dict


def make_refexps(rng: np.random.Generator, scene: Scene, count: int) -> list[Datapoint]:
    """Up to ``count`` referring expressions to distinct objects, drawn uniformly among them."""
    out = []
    for target in rng.permutation(len(scene.objects)).tolist():
        if len(out) == count:
            break
        expr = _choose_expression(rng, referring_options(scene, target))
        if expr is None:
            continue  # e.g. an exact twin with no usable spatial word: not referable
        caption, root, _ = expr.text()
        out.append(Datapoint(caption, [(target, [list(root)])], {}))
    return out


def _phrase(desc: Description, n: int) -> str:
    if n == 1:
        text = desc.text()
        return f"{_article(text)} {text}"
    return f"{COUNT_WORDS[n]} {desc.text(plural=True)}"


def make_phrase_caption(rng: np.random.Generator, scene: Scene) -> Datapoint:
    """A Flickr-style caption listing groups of objects; a phrase covers all objects matching it."""
    objs = scene.objects
    levels = [("color", "shape"), ("size", "color", "shape"), ("shape",), ("color", "shape")]
    keys = levels[int(rng.integers(len(levels)))]
    groups: dict[Description, list[int]] = {}
    for i, o in enumerate(objs):
        groups.setdefault(Description.of(o, keys), []).append(i)
    order = list(groups)
    if rng.random() < 0.5:
        order = [order[i] for i in rng.permutation(len(order))]
    else:  # left to right, as people often list things
        order.sort(key=lambda d: min(objs[i].center[0] for i in groups[d]))
    if len(order) > 1 and rng.random() < 0.35:
        order = order[: int(rng.integers(1, len(order)))]
    phrases = [_phrase(d, len(groups[d])) for d in order]
    prefixes = ["", "there {} ", "a picture of ", "an image with "]
    prefix = prefixes[int(rng.integers(len(prefixes)))]
    if "{}" in prefix:
        prefix = prefix.format("is" if len(groups[order[0]]) == 1 else "are")
    caption = prefix
    spans = []
    for k, phrase in enumerate(phrases):
        if k > 0:
            caption += " and " if k == len(phrases) - 1 else " , "
        spans.append([len(caption), len(caption) + len(phrase)])
        caption += phrase
    caption += " ."
    boxes = [(i, [span]) for d, span in zip(order, spans) for i in groups[d]]
    boxes.sort(key=lambda b: b[0])
    return Datapoint(caption, boxes, {"tokens_positive_eval": [[span] for span in spans]})


def _absent_description(rng: np.random.Generator, scene: Scene, keys: Sequence[str]
                         ) -> Description | None:
    values = {"size": SIZES, "color": tuple(COLORS), "shape": SHAPES}
    for _ in range(20):
        desc = Description(tuple((k, values[k][int(rng.integers(len(values[k])))]) for k in keys))
        if not any(desc.matches(o) for o in scene.objects):
            return desc
    return None


def _qa_fields(answer: str, family: str, answer_type: str) -> dict:
    return {"answer": answer, "question_type": QA_GQA_TYPES[family], "question_family": family,
            "answer_type": answer_type}


def _count_or_exist(rng: np.random.Generator, scene: Scene, kind: str) -> Datapoint | None:
    objs = scene.objects
    keysets = [("shape",), ("color", "shape"), ("color",), ("size", "shape")]
    keys = keysets[int(rng.integers(len(keysets)))]
    if rng.random() < (0.5 if kind == "exist" else 0.15):
        desc = _absent_description(rng, scene, keys)
        if desc is None:
            return None
    elif kind == "count" and rng.random() < 0.15:
        desc = Description(())  # "objects": everything
    else:
        desc = Description.of(objs[int(rng.integers(len(objs)))], keys)
    members = [i for i, o in enumerate(objs) if desc.matches(o)]
    if kind == "exist":
        phrase = f"{_article(desc.text())} {desc.text()}"
        prefix = "is there "
        caption = f"{prefix}{phrase} ?"
        answer, answer_type = ("yes" if members else "no"), "binary"
    else:
        phrase = desc.text(plural=True)
        prefix = "how many "
        caption = f"{prefix}{phrase} are there ?"
        answer, answer_type = str(len(members)), "number"
    span = [len(prefix), len(prefix) + len(phrase)]
    return Datapoint(caption, [(i, [span]) for i in members],
                     _qa_fields(answer, kind, answer_type))


def _attribute_question(rng: np.random.Generator, scene: Scene, asked: str) -> Datapoint | None:
    target = int(rng.integers(len(scene.objects)))
    expr = _choose_expression(rng, referring_options(scene, target, exclude=(asked,)))
    if expr is None:
        return None
    text, root, anchor = expr.text()
    prefix = f"what {asked} is "
    caption = f"{prefix}{text} ?"
    boxes = [(target, [[root[0] + len(prefix), root[1] + len(prefix)]])]
    if anchor is not None:  # every object the question mentions is annotated (as CLEVR does)
        boxes.append((expr.anchor, [[anchor[0] + len(prefix), anchor[1] + len(prefix)]]))
    answer = scene.objects[target].attribute(asked)
    return Datapoint(caption, boxes, _qa_fields(answer, asked, "attribute"))


def make_questions(rng: np.random.Generator, scene: Scene, count: int) -> list[Datapoint]:
    """``count`` questions of random types (exist, count, color, shape, size), answers included."""
    kinds = ("exist", "count", "color", "shape", "size")
    out = []
    for _ in range(4 * count):
        if len(out) == count:
            break
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind in ("exist", "count"):
            dp = _count_or_exist(rng, scene, kind)
        else:
            dp = _attribute_question(rng, scene, kind)
        if dp is not None and all(dp.caption != o.caption for o in out):
            out.append(dp)
    return out


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def lexicon() -> list[str]:
    """Every word the captions can use, in caption-like lines (for training the tokenizer)."""
    words = (list(SHAPES) + [_plural(s) for s in SHAPES] + ["object", "objects"] + list(COLORS)
             + list(SIZES) + list(SUPERLATIVES) + list(COUNT_WORDS)
             + "the a an and , . ? left right of above below there is are picture image with what "
               "color shape size how many".split())
    return [" ".join(words), " ".join(reversed(words))] + words


DETECTION = "detection"  # the COCO detection view (not an MDETR caption family)


def _json_paths(root: Path) -> dict[str, Path]:
    return {f"synthetic_{family}_{split}": root / "annotations" / f"synthetic_{family}_{split}.json"
            for family in FAMILIES + (DETECTION,) for split in SPLITS}


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of ``split``: it draws the scene first, then its captions.

    One generator per scene, so scene i of a split does not depend on the split's size.
    """
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _flickr_entities_files(scene: Scene, file_name: str, datapoints: list[Datapoint]
                           ) -> tuple[str, str]:
    """The scene's captions in the Flickr30k Entities layout (``Sentences/<id>.txt``,
    ``Annotations/<id>.xml``), so the Flickr evaluator reads them as it reads Flickr30k.

    An entity is a set of objects (one per phrase; phrases of different sentences naming the same
    set share it); its type is the shape, so recalls are also reported per shape.
    """
    entities: dict[tuple[int, ...], str] = {}
    lines = []
    for dp in datapoints:
        members: dict[tuple[int, int], list[int]] = {}
        for obj_index, spans in dp.boxes:
            members.setdefault(tuple(spans[0]), []).append(obj_index)
        caption, marked, last = dp.caption, [], 0
        for (span,) in dp.extra["tokens_positive_eval"]:
            objs = tuple(sorted(members[tuple(span)]))
            entity = entities.setdefault(objs, str(len(entities) + 1))
            beg, end = span
            shape = scene.objects[objs[0]].shape
            marked.append(f"{caption[last:beg]}[/EN#{entity}/{shape} {caption[beg:end]}]")
            last = end
        lines.append("".join(marked) + caption[last:])
    objects = []
    for i, obj in enumerate(scene.objects):
        names = "".join(f"<name>{e}</name>" for objs, e in entities.items() if i in objs)
        if names:
            x, y, w, h = obj.bbox
            box = "".join(f"<{t}>{round(v)}</{t}>" for t, v in
                          zip(("xmin", "ymin", "xmax", "ymax"), (x, y, x + w, y + h)))
            objects.append(f"<object>{names}<bndbox>{box}</bndbox></object>")
    size = f"<width>{scene.width}</width><height>{scene.height}</height><depth>3</depth>"
    xml = (f"<annotation><filename>{file_name}</filename><size>{size}</size>{''.join(objects)}"
           "</annotation>\n")
    return "\n".join(lines) + "\n", xml


def _generate_split(root: Path, split: str, num_images: int, seed: int, params: dict
                    ) -> tuple[dict[str, dict], list[str]]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    entities_dir = root / "flickr_entities" / split
    for sub in ("Sentences", "Annotations"):
        (entities_dir / sub).mkdir(parents=True, exist_ok=True)
    files = {family: {"info": {"description": f"synthetic grounding world, {family} {split}",
                               "seed": seed, "generator_version": GENERATOR_VERSION},
                      "licenses": [], "categories": _categories(), "images": [], "annotations": []}
             for family in FAMILIES + (DETECTION,)}
    captions = []
    for index in tqdm(range(num_images), desc=f"synthetic {split}", unit="img",
                      disable=not params["progress"]):
        rng = scene_rng(seed, split, index)
        scene = sample_scene(rng, params["min_side"], params["max_side"])
        file_name = f"{index:06d}.png"
        render_scene(scene).save(image_dir / file_name, format="PNG")
        per_family = {
            "refexp": make_refexps(rng, scene, params["refexp_per_image"]),
            "flickr": [make_phrase_caption(rng, scene) for _ in range(params["flickr_per_image"])],
            "qa": make_questions(rng, scene, params["qa_per_image"]),
        }
        detection = files[DETECTION]
        detection["images"].append({"file_name": file_name, "height": scene.height,
                                    "width": scene.width, "id": index})
        for obj in scene.objects:
            # Ids from 1: pycocotools' matching takes annotation id 0 for "unmatched".
            ann = {"area": round(obj.area, 2), "iscrowd": 0, "image_id": index,
                   "category_id": SHAPES.index(obj.shape) + 1,
                   "id": len(detection["annotations"]) + 1, "bbox": [round(v, 2) for v in obj.bbox]}
            if params["masks"]:
                ann["segmentation"] = [[v for p in obj.polygon for v in p]]
            detection["annotations"].append(ann)
        sentences, xml = _flickr_entities_files(scene, file_name, per_family["flickr"])
        (entities_dir / "Sentences" / f"{index}.txt").write_text(sentences)
        (entities_dir / "Annotations" / f"{index}.xml").write_text(xml)
        for family, datapoints in per_family.items():
            data = files[family]
            for sentence_id, dp in enumerate(datapoints):
                image_id = len(data["images"])
                entry = {"file_name": file_name, "height": scene.height, "width": scene.width,
                         "id": image_id, "original_id": index, "caption": dp.caption,
                         "dataset_name": f"synthetic_{family}"}
                if family == "flickr":
                    entry.update(original_img_id=index, sentence_id=sentence_id)
                if family == "qa":
                    entry["questionId"] = f"{split}_{index:06d}_{sentence_id}"
                entry.update(dp.extra)
                data["images"].append(entry)
                captions.append(dp.caption)
                for obj_index, spans in dp.boxes:
                    obj = scene.objects[obj_index]
                    ann = {"area": round(obj.area, 2), "iscrowd": 0, "image_id": image_id,
                           "category_id": SHAPES.index(obj.shape) + 1,
                           "id": len(data["annotations"]),
                           "bbox": [round(v, 2) for v in obj.bbox], "tokens_positive": spans}
                    if params["masks"]:
                        ann["segmentation"] = [[v for p in obj.polygon for v in p]]
                    data["annotations"].append(ann)
    (entities_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in range(num_images)))
    return files, captions


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def generate_synthetic_dataset(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 200,
    *,
    refexp_per_image: int = 2,
    flickr_per_image: int = 1,
    qa_per_image: int = 2,
    min_side: int = 96,
    max_side: int = 128,
    masks: bool = True,
    text_encoder: bool = True,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    force: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Write the synthetic grounding dataset (and its text encoder) under ``root``.

    Layout: ``images/{split}/NNNNNN.png``,
    ``annotations/synthetic_{refexp,flickr,qa,detection}_{split}.json``,
    ``flickr_entities/{split}/``
    (Flickr30k Entities layout of the flickr captions), ``text_encoder/`` (fast RoBERTa tokenizer
    trained on the train captions + a random-init RoBERTa),
    ``synthetic_qa_answer2id{,_by_type}.json`` (GQA-format answer vocabularies) and
    ``manifest.json``. When ``manifest.json`` records the same
    parameters and every output exists, nothing is written (pass ``force`` to regenerate).

    Args:
        root: output folder (created).
        seed: everything is a function of it (and of the other parameters).
        num_train, num_val, num_test: scenes (PNG images) per split.
        refexp_per_image, flickr_per_image, qa_per_image: datapoints per scene and family (at most;
            a scene can have fewer referable objects or distinct questions).
        min_side, max_side: range of the image width and height in pixels.
        masks: write per-object polygons (``segmentation``).
        text_encoder: also build ``text_encoder/``.
        text_hidden_size, text_layers: size of the random-init RoBERTa.
        force: regenerate even if the manifest matches.
        progress: show tqdm progress bars.

    Returns:
        ``{"synthetic_<family>_<split>": json path, ..., "image_root_<split>": folder,
        "flickr_entities_<split>": folder, "qa_answer2id": path, "qa_answer2id_by_type": path,
        "text_encoder": folder (if built), "manifest": path}``.
    """
    root = Path(root)
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
              "num_val": num_val, "num_test": num_test, "refexp_per_image": refexp_per_image,
              "flickr_per_image": flickr_per_image, "qa_per_image": qa_per_image,
              "min_side": min_side, "max_side": max_side, "masks": masks,
              "text_encoder": text_encoder,
              "text_hidden_size": text_hidden_size, "text_layers": text_layers}
    if min_side < 2 * SIZE_RANGES["large"][1]:
        raise ValueError(f"min_side must be at least {2 * SIZE_RANGES['large'][1]} pixels")
    outputs = {name: str(p) for name, p in _json_paths(root).items()}
    outputs.update({f"image_root_{s}": str(root / "images" / s) for s in SPLITS})
    outputs.update({f"flickr_entities_{s}": str(root / "flickr_entities" / s) for s in SPLITS})
    outputs["qa_answer2id"] = str(root / "synthetic_qa_answer2id.json")
    outputs["qa_answer2id_by_type"] = str(root / "synthetic_qa_answer2id_by_type.json")
    if text_encoder:
        outputs["text_encoder"] = str(root / "text_encoder")
    manifest_path = root / MANIFEST_NAME
    outputs["manifest"] = str(manifest_path)

    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        expected = [p for k, p in outputs.items() if k != "manifest"]
        if manifest.get("params") == params and all(Path(p).exists() for p in expected):
            logger.info("synthetic dataset at %s is up to date (seed %d)", root, seed)
            return outputs
    if manifest_path.is_file():
        # Stale output of ours: drop it so no image of a larger earlier run lingers.
        manifest_path.unlink()
        for split in SPLITS:
            shutil.rmtree(root / "images" / split, ignore_errors=True)
            shutil.rmtree(root / "flickr_entities" / split, ignore_errors=True)
        shutil.rmtree(root / "text_encoder", ignore_errors=True)

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    num_images = {"train": num_train, "val": num_val, "test": num_test}
    counts = {}
    train_captions: list[str] = []
    run_params = dict(params, progress=progress)
    for split in SPLITS:
        files, captions = _generate_split(root, split, num_images[split], seed, run_params)
        if split == "train":
            train_captions = captions
        for family, data in files.items():
            _write_json(Path(outputs[f"synthetic_{family}_{split}"]), data)
            counts[f"synthetic_{family}_{split}"] = {"datapoints": len(data["images"]),
                                                     "boxes": len(data["annotations"])}
        counts[f"images_{split}"] = num_images[split]
    answer2id, answer2id_by_type = qa_vocabularies()
    _write_json(Path(outputs["qa_answer2id"]), answer2id)
    _write_json(Path(outputs["qa_answer2id_by_type"]), answer2id_by_type)

    if text_encoder:
        from .synthetic_text import build_text_encoder_folder

        build_text_encoder_folder(root / "text_encoder", lexicon() + train_captions, seed=seed,
                                  hidden_size=text_hidden_size, num_layers=text_layers)

    written = [str(Path(p).relative_to(root)) for k, p in outputs.items() if k != "manifest"]
    digest = hashlib.sha256()
    for name in sorted(written):
        path = root / name
        for file in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    _write_json(manifest_path, {"params": params, "files": sorted(written), "counts": counts,
                                "sha256_of_files": digest.hexdigest()})
    logger.info("wrote synthetic dataset to %s: %s", root, counts)
    return outputs


def qa_vocabularies() -> tuple[dict, dict]:
    """The QA answer vocabularies in the format of ``gqa_answer2id.json`` and
    ``gqa_answer2id_by_type.json`` (§5.6): every vocabulary ends with "unknown"."""
    by_type = {
        "obj": ["no", "yes"],
        "attr": list(SIZES) + list(COLORS),
        "rel": [],
        "global": [str(i) for i in range(MAX_OBJECTS + 1)],
        "cat": list(SHAPES),
    }
    answer2id_by_type = {f"answer_{t}": {a: i for i, a in enumerate(answers + ["unknown"])}
                         for t, answers in by_type.items()}
    everything = [a for answers in by_type.values() for a in answers] + ["unknown"]
    return {a: i for i, a in enumerate(everything)}, answer2id_by_type


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------
_EVALUATOR_TYPES = {"refexp": "refexp", "flickr": "flickr", "qa": "gqa"}


def _family_metadata(family: str, root: Path, split: str) -> dict:
    """The metadata the evaluators of a caption family read."""
    metadata = {"evaluator_type": _EVALUATOR_TYPES[family]}
    if family == "qa":  # the keys of the GQA registration
        metadata.update(
            gqa_answer_vocab=str(root / "synthetic_qa_answer2id.json"),
            gqa_answer_vocab_by_type=str(root / "synthetic_qa_answer2id_by_type.json"),
            gqa_split=split, qa_attributes=list(QA_ATTRIBUTES))
    if family == "flickr":  # the Flickr evaluator reads the Flickr30k Entities layout
        metadata.update(flickr_entities_dir=str(root / "flickr_entities" / split),
                        flickr_split=split, flickr_gt_type="separate")
    return metadata


def register_synthetic(root: str | os.PathLike) -> list[str]:
    """Register ``synthetic_{refexp,flickr,qa,detection}_{train,val,test}`` from a generated folder.

    The caption families use :func:`mdetr_d2.data.register_mdetr_json`, with the metadata the
    project's evaluators read (``evaluator_type`` refexp / flickr / gqa, the Flickr30k Entities
    folder, the GQA-format answer vocabularies); the detection view uses Detectron2's
    ``register_coco_instances`` (``evaluator_type`` coco; ``thing_classes`` = the shapes once
    loaded).
    All get ``text_encoder``, the folder to use as ``MODEL.MDETR.TEXT_ENCODER.NAME``.
    Nothing is read at registration. A name already registered for the same root is kept; one
    registered for another root is replaced (e.g. a demo generating into a temporary folder).

    Returns:
        the names (re)registered by this call.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    from .datasets.mdetr_json import register_mdetr_json

    root = Path(root)
    names = []
    for family in FAMILIES + (DETECTION,):
        for split in SPLITS:
            name = f"synthetic_{family}_{split}"
            if name in DatasetCatalog.list():
                if MetadataCatalog.get(name).get("dataset_root") == str(root):
                    continue
                logger.info("re-registering %s from %s", name, root)
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            metadata = {"dataset_root": str(root), "text_encoder": str(root / "text_encoder")}
            json_file, image_root = str(_json_paths(root)[name]), str(root / "images" / split)
            if family == DETECTION:
                register_coco_instances(name, metadata, json_file, image_root)
            else:
                register_mdetr_json(name, json_file, image_root, **metadata,
                                    **_family_metadata(family, root, split))
            names.append(name)
    return names
