"""The language of the synthetic world: descriptions, referring expressions, captions, questions.

Three kinds of datapoints are made from a scene, each a caption with the objects it grounds (the
character spans naming them) and the extra fields of its json entry:

* referring expressions that single out exactly one object ("the small red circle", "the square
  left of the green star", "the leftmost blue triangle"), their span the root noun phrase; the
  referred object is drawn uniformly among the objects of the scene, so a text-blind guess ("the
  largest object") is right only about 1/n of the time; each records its ``expression_type`` (what
  singles the object out, :data:`EXPRESSION_TYPES`), by which the RefExp evaluator breaks P@k down;
* Flickr-style phrase captions ("two red circles and a blue square ."), where a phrase covers
  every object of the scene that matches its words;
* questions with their answer (exist / count / color / shape / size), a GQA semantic type (so the
  GQA answer heads and vocabulary files work unchanged) and a CLEVR answer family; the objects the
  question mentions are annotated.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .scenes import COLORS, MAX_OBJECTS, SHAPES, SIZES, Scene, SceneObject

RELATIONS = ("left of", "right of", "above", "below")
# What singles the referred object out, recorded per referring expression: attribute words only
# (colour, shape, both), a size word (with or without others), a superlative ("the leftmost ..."),
# a relation to another object ("... left of the green star").
EXPRESSION_TYPES = ("color", "shape", "color_shape", "size", "absolute_position", "relation")
SUPERLATIVES = ("leftmost", "rightmost", "topmost", "bottommost")
COUNT_WORDS = ("zero", "a", "two", "three", "four", "five")
# QA: each question family maps to a GQA semantic type (§5.6), whose answer head predicts it. GQA
# has no counting type; counts go to "global" (each type is just a separate classifier).
QA_GQA_TYPES = {"exist": "obj", "color": "attr", "size": "attr", "shape": "cat", "count": "global"}
# The same answers as the CLEVR answer families (§1.15): attributes fit the 15-way attribute head.
QA_ATTRIBUTES = SIZES + tuple(COLORS) + SHAPES

_ATTRIBUTE_KEYS = ("size", "color", "shape")  # word order inside a noun phrase
# Minimum distance, in pixels between object centres, for a spatial word to hold; a distractor must
# be at least this far on the wrong side, so no expression hinges on a few pixels.
_SPATIAL_MARGIN = 8.0


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

    def expression_type(self) -> str:
        """One of :data:`EXPRESSION_TYPES`: a relation or a superlative first, then a size word,
        then the attribute words."""
        if self.relation is not None:
            return "relation"
        if self.superlative is not None:
            return "absolute_position"
        keys = self.desc.keys()
        return "size" if "size" in keys else "_".join(keys)


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


def choose_expression(rng: np.random.Generator, options: dict[str, list[ReferringExpression]]
                      ) -> ReferringExpression | None:
    """One of :func:`referring_options`' expressions: a kind by its weight, then uniformly."""
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
        expr = choose_expression(rng, referring_options(scene, target))
        if expr is None:
            continue  # e.g. an exact twin with no usable spatial word: not referable
        caption, root, _ = expr.text()
        out.append(Datapoint(caption, [(target, [list(root)])],
                             {"expression_type": expr.expression_type()}))
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


def absent_description(rng: np.random.Generator, scene: Scene, keys: Sequence[str]
                       ) -> Description | None:
    """A random description over ``keys`` that no object of the scene matches (None if 20 draws
    all match one)."""
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
        desc = absent_description(rng, scene, keys)
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
    expr = choose_expression(rng, referring_options(scene, target, exclude=(asked,)))
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


def lexicon() -> list[str]:
    """Every word the captions can use, in caption-like lines (for training the tokenizer)."""
    words = (list(SHAPES) + [_plural(s) for s in SHAPES] + ["object", "objects"] + list(COLORS)
             + list(SIZES) + list(SUPERLATIVES) + list(COUNT_WORDS)
             + "the a an and , . ? left right of above below there is are picture image with what "
               "color shape size how many".split())
    return [" ".join(words), " ".join(reversed(words))] + words


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

