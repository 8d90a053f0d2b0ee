"""Scenes of the synthetic world: coloured shapes on a plain background, drawn from a seed.

A scene has a size, a background colour and 2-5 non-overlapping objects; an object has a shape, a
colour, a size class and the polygon that is filled when the scene is rendered (its COCO mask).
Everything is a function of the ``numpy`` generator passed in; :func:`scene_rng` gives the one of
each scene of a split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
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
MAX_OBJECTS = 5

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


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


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of scene ``index`` of ``split``: it draws the scene first, then its captions.

    One generator per scene, so scene i of a split does not depend on the split's size.
    """
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])

