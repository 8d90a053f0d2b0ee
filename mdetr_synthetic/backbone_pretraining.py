"""The synthetic world's stand-in for ImageNet weights: a backbone pre-trained to name colours and shapes.

MDETR never trains its backbone from random weights: it starts from an ImageNet classifier. Trained
from scratch on the grounding losses alone, the embedded default's backbone ends up blind to colour
(its box losses do not need it): a linear probe reads an object's colour from the projected image
token at its centre 60 % of the time at random initialisation and 22 % after 2600 grounding
iterations (chance 20 %). This module gives the world a small supervised pre-training instead,
the analogue of the ImageNet step: on the training scenes only, the backbone learns to name the
colour and the shape of every object from the feature cell at the object's centre (two linear
heads, discarded afterwards). The result is a Detectron2 checkpoint holding ``backbone.*``
weights, loaded with ``MODEL.WEIGHTS`` before MDETR's own training.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from .rendering import render_scene
from .scenes import COLORS, SHAPES, sample_scene, scene_rng
from .writers import MANIFEST_NAME

logger = logging.getLogger(__name__)

BACKBONE_FILE = "backbone_pretrained.pth"
_ACCURACY_WINDOW = 50  # training batches the reported accuracy averages over
# Bump whenever the pre-training changes for the same arguments (invalidates existing files).
PRETRAINING_VERSION = 1


def _training_scenes(root: Path) -> list[tuple[np.ndarray, list[tuple[float, float, int, int]]]]:
    """The world's training scenes as (RGB image, [(centre x, centre y, colour, shape)]), redrawn
    from the seed in ``manifest.json`` (the same images as ``images/train``)."""
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: generate the world first "
                                f"(tools/make_synthetic.py --root {root})")
    params = json.loads(manifest.read_text())["params"]
    colors, shapes = list(COLORS), list(SHAPES)
    scenes = []
    for index in range(params["num_train"]):
        scene = sample_scene(scene_rng(params["seed"], "train", index), params["min_side"],
                             params["max_side"])
        labels = [(*o.center, colors.index(o.color), shapes.index(o.shape)) for o in scene.objects]
        scenes.append((np.array(render_scene(scene)), labels))
    return scenes


def _cache_key(cfg: CfgNode, root: Path, steps: int, batch_size: int, lr: float, seed: int) -> dict:
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    return {"version": PRETRAINING_VERSION, "world": manifest["params"],
            "backbone": json.loads(json.dumps(dict(backbone=cfg.MODEL.BACKBONE, resnets=cfg.MODEL.RESNETS))),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN), "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}


def pretrain_backbone(cfg: CfgNode, root: str | os.PathLike, output: str | os.PathLike | None = None,
                      *, steps: int = 300, batch_size: int = 16, lr: float = 1e-3,
                      seed: int = 0) -> Path:
    """Pre-train ``cfg``'s backbone on the world at ``root`` to name each object's colour and shape.

    Every step draws ``batch_size`` training scenes, pads them (normalised with
    ``MODEL.PIXEL_MEAN``/``PIXEL_STD``) into one batch and classifies, from the backbone's last
    level, the cell under each object's centre: colour (6-way) and shape (5-way), cross-entropy
    each, AdamW at ``lr``. Deterministic from ``seed``. A file written with the same arguments,
    world and backbone config is reused.

    Args:
        cfg: an MDETR config (its ``MODEL.BACKBONE``, ``MODEL.RESNETS`` and pixel statistics).
        root: the generated world (``manifest.json`` and its seed).
        output: checkpoint path (default ``<root>/backbone_pretrained.pth``).

    Returns:
        the checkpoint path: ``{"model": {"backbone.<name>": tensor}, "pretraining": {"key",
        "colour_accuracy", "shape_accuracy"}}`` (accuracies on the last 50 training batches), for
        ``MODEL.WEIGHTS`` (the rest of the model keeps its initialisation).
    """
    root = Path(root)
    output = Path(output) if output is not None else root / BACKBONE_FILE
    key = _cache_key(cfg, root, steps, batch_size, lr, seed)
    if output.is_file():
        saved = torch.load(output, map_location="cpu", weights_only=True)
        if saved.get("pretraining", {}).get("key") == json.dumps(key, sort_keys=True):
            logger.info("Backbone pre-training: %s is up to date", output)
            return output

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    levels = backbone.output_shape()
    name = max(levels, key=lambda k: levels[k].stride)  # the level MDETR's transformer reads
    spec = levels[name]
    heads = torch.nn.Linear(spec.channels, len(COLORS) + len(SHAPES))
    optimizer = torch.optim.AdamW([*backbone.parameters(), *heads.parameters()], lr=lr,
                                  weight_decay=1e-4)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    scenes = _training_scenes(root)
    backbone.train()
    recent: list[tuple[float, float]] = []  # batch accuracies (colour, shape) of the last steps
    for step in range(steps):
        batch = [scenes[i] for i in rng.integers(len(scenes), size=batch_size)]
        height = max(image.shape[0] for image, _ in batch)
        width = max(image.shape[1] for image, _ in batch)
        images = torch.zeros(len(batch), 3, height, width)
        cells, colour, shape = [], [], []
        for k, (image, labels) in enumerate(batch):
            pixels = torch.from_numpy(image).permute(2, 0, 1).float()
            images[k, :, : image.shape[0], : image.shape[1]] = (pixels - mean) / std
            for cx, cy, c, s in labels:
                cells.append((k, int(cy // spec.stride), int(cx // spec.stride)))
                colour.append(c)
                shape.append(s)
        features = backbone(images)[name]
        index = torch.tensor(cells)
        index[:, 1].clamp_(max=features.shape[2] - 1)
        index[:, 2].clamp_(max=features.shape[3] - 1)
        logits = heads(features[index[:, 0], :, index[:, 1], index[:, 2]])
        colour, shape = torch.tensor(colour), torch.tensor(shape)
        loss = (F.cross_entropy(logits[:, : len(COLORS)], colour)
                + F.cross_entropy(logits[:, len(COLORS):], shape))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            recent = recent[-(_ACCURACY_WINDOW - 1):] + [tuple(
                float((logits[:, part].argmax(1) == target).float().mean()) for part, target in
                ((slice(0, len(COLORS)), colour), (slice(len(COLORS), None), shape)))]
        if (step + 1) % 100 == 0 or step + 1 == steps:
            logger.info("Backbone pre-training step %d/%d: loss %.3f, accuracy colour %.2f, "
                        "shape %.2f (last %d batches)", step + 1, steps, loss.item(),
                        *np.mean(recent, 0), len(recent))
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    colour_accuracy, shape_accuracy = np.mean(recent, 0) if recent else (0.0, 0.0)
    torch.save({"model": state, "pretraining": {
        "key": json.dumps(key, sort_keys=True), "colour_accuracy": float(colour_accuracy),
        "shape_accuracy": float(shape_accuracy)}}, tmp)
    os.replace(tmp, output)
    logger.info("Backbone pre-training: wrote %s (%d tensors)", output, len(state))
    return output
