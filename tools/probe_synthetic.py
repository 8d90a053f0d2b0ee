#!/usr/bin/env python
"""Linear probes of a synthetic-world MDETR: what do its features know about each object?

For every object of the world's phrase-caption scenes (``synthetic_flickr_{train,val}``, fed with their
caption), three features are read and a linear classifier is fitted on the training scenes and scored on
the validation scenes, for the object's colour (6-way), shape (5-way) and size class (2-way):

* image token: the input projection of the backbone's last level at the object's centre cell;
* encoder memory: the cross-encoder's output at that cell;
* decoder state: the last decoder layer's output of the query whose box overlaps the object best
  (only objects some query boxes with IoU >= 0.5).

    python tools/probe_synthetic.py --weights output/synthetic/model_final.pth
    python tools/probe_synthetic.py --weights random      # the same model at its initialisation

A feature that tells colour or shape no better than the majority class cannot ground colour or shape
words (README, "Results of the embedded default").

The text side is read too: how alike the six colour words (and the five shape words) are, as the mean
cosine similarity between the words' features in one-word captions ("the red object", "the circle")
with a validation image, after the text encoder, after the cross-encoder and in the contrastive
alignment projection. Words that a stage maps to nearly the same vector (similarity near 1) cannot
be told apart downstream of it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from torchvision.ops import box_convert, box_iou

from mdetr_d2 import add_mdetr_config
from mdetr_d2.data import MDETRDatasetMapper
from mdetr_d2.engine.trainer import load_weights_for_evaluation
from mdetr_synthetic import default_synthetic_root, register_synthetic
from mdetr_synthetic.scenes import COLORS, SHAPES, SIZES, sample_scene, scene_rng
from mdetr_synthetic.writers import MANIFEST_NAME

FEATURES = ("image token", "encoder memory", "decoder state")
TEXT_STAGES = ("text encoder", "text memory", "alignment projection")
# One-word captions per attribute: a template and the words put into it.
WORD_CAPTIONS = {"colour": ("the {} object", list(COLORS)), "shape": ("the {}", list(SHAPES))}
ATTRIBUTES = {"colour": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}
MIN_OBJECTS = 20  # per split, for a probe to be fitted and scored


@torch.no_grad()
def object_features(model, cfg, root: Path, split: str, num_scenes: int) -> dict:
    """``{feature: N×D tensor, attribute: N labels, "boxed": N bools}`` over the objects of the
    first ``num_scenes`` phrase captions of ``split``."""
    params = json.loads((root / MANIFEST_NAME).read_text())["params"]
    mapper = MDETRDatasetMapper(cfg, is_train=False)
    captured = {}
    hook = model.class_embed.register_forward_hook(lambda m, args, out: captured.update(hs=args[0]))
    rows = {k: [] for k in (*FEATURES, *ATTRIBUTES, "boxed")}
    try:
        for record in DatasetCatalog.get(f"synthetic_flickr_{split}")[:num_scenes]:
            index = int(Path(record["file_name"]).stem)
            scene = sample_scene(scene_rng(params["seed"], split, index), params["min_side"],
                                 params["max_side"])
            x = mapper(dict(record))
            images = model.preprocess_image([x])
            enc = model.encode(images.tensor, model.padding_mask(images), [x["caption"]])
            out = model.decode(enc)
            height, width = images.image_sizes[0]
            scale = width / record["width"]
            grid_h, grid_w = enc.image.projected.shape[-2:]
            stride = images.tensor.shape[-1] / grid_w
            pred = box_convert(out["pred_boxes"][0], "cxcywh", "xyxy") * torch.tensor(
                [width, height, width, height])
            gt = box_convert(torch.tensor([o.bbox for o in scene.objects]), "xywh", "xyxy") * scale
            iou = box_iou(pred, gt)
            states = captured["hs"][-1, 0]
            for k, obj in enumerate(scene.objects):
                cx, cy = (c * scale for c in obj.center)
                row, col = min(int(cy // stride), grid_h - 1), min(int(cx // stride), grid_w - 1)
                query = int(iou[:, k].argmax())
                rows["image token"].append(enc.image.projected[0, :, row, col])
                rows["encoder memory"].append(enc.memory[0, row * grid_w + col])
                rows["decoder state"].append(states[query])
                rows["boxed"].append(bool(iou[query, k] >= 0.5))
                for name, values in ATTRIBUTES.items():
                    rows[name].append(values.index(getattr(obj, "color" if name == "colour" else name)))
    finally:
        hook.remove()
    return {k: torch.stack(v) if k in FEATURES else torch.tensor(v) for k, v in rows.items()}


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over the distinct pairs of rows of ``x`` (N×D, N >= 2)."""
    x = F.normalize(x.float(), dim=-1)
    n = x.shape[0]
    return float(((x @ x.T).sum() - n) / (n * (n - 1)))


@torch.no_grad()
def word_similarity(model, image: dict) -> dict:
    """``{attribute: {stage: mean pairwise cosine}}`` of the attribute's words (see the module doc),
    each word in its one-word caption with ``image`` (a mapped record); stages the model lacks (no
    contrastive alignment) are left out."""
    images = model.preprocess_image([image])
    mask = model.padding_mask(images)
    out = {}
    for attribute, (template, words) in WORD_CAPTIONS.items():
        n, offset = len(words), template.index("{}")
        enc = model.encode(images.tensor.expand(n, -1, -1, -1), mask.expand(n, -1, -1),
                           [template.format(w) for w in words])
        rows = torch.arange(n)
        cols = torch.tensor([enc.text.tokenized.char_to_token(i, offset) for i in range(n)])
        stages = {"text encoder": enc.text.features, "text memory": enc.text_memory}
        if model.contrastive_align_projection_text is not None:
            stages["alignment projection"] = model.contrastive_align_projection_text(enc.text_memory)
        out[attribute] = {k: mean_pairwise_cosine(v[rows, cols]) for k, v in stages.items()}
    return out


def linear_probe_accuracy(x_train, y_train, x_val, y_val, num_classes: int, seed: int = 0) -> float:
    """Validation accuracy of a softmax-regression probe (standardised inputs, Adam, 500 steps)."""
    torch.manual_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    probe = torch.nn.Linear(x_train.shape[1], num_classes)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(500):
        optimizer.zero_grad()
        F.cross_entropy(probe(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        return float((probe(x_val).argmax(1) == y_val).float().mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/synthetic/mdetr_synthetic.yaml")
    parser.add_argument("--data-root", default=default_synthetic_root())
    parser.add_argument("--weights", required=True, help="a checkpoint, or 'random'")
    parser.add_argument("--train-scenes", type=int, default=500)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    root = Path(args.data_root)
    register_synthetic(root)
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.MDETR.TEXT_ENCODER.NAME = str(root / "text_encoder")
    model = build_model(cfg)
    if args.weights != "random":
        load_weights_for_evaluation(model, args.weights, cfg.OUTPUT_DIR)
    model.eval()
    train = object_features(model, cfg, root, "train", args.train_scenes)
    val = object_features(model, cfg, root, "val", args.val_scenes)
    results = {"boxed_fraction_val": float(val["boxed"].float().mean())}
    print(f"objects: {len(train['boxed'])} train, {len(val['boxed'])} val; boxed by a query "
          f"(IoU >= 0.5): {results['boxed_fraction_val']:.2f} of val")
    print(f"{'feature':16s} " + " ".join(f"{a:>8s}" for a in ATTRIBUTES))
    for feature in FEATURES:
        keep_train = train["boxed"] if feature == "decoder state" else torch.ones_like(train["boxed"])
        keep_val = val["boxed"] if feature == "decoder state" else torch.ones_like(val["boxed"])
        if min(int(keep_train.sum()), int(keep_val.sum())) < MIN_OBJECTS:
            results[feature] = None
            print(f"{feature:16s} n/a: fewer than {MIN_OBJECTS} objects boxed by a query")
            continue
        results[feature] = {
            a: linear_probe_accuracy(train[feature][keep_train], train[a][keep_train],
                                     val[feature][keep_val], val[a][keep_val], len(values))
            for a, values in ATTRIBUTES.items()}
        print(f"{feature:16s} " + " ".join(f"{results[feature][a]:8.3f}" for a in ATTRIBUTES))
    results["majority_class"] = {
        a: float(torch.bincount(val[a]).max() / len(val[a])) for a in ATTRIBUTES}
    print(f"{'majority class':16s} " + " ".join(f"{results['majority_class'][a]:8.3f}"
                                                for a in ATTRIBUTES))
    record = DatasetCatalog.get("synthetic_flickr_val")[0]
    results["word similarity"] = word_similarity(model, MDETRDatasetMapper(cfg, is_train=False)(
        dict(record)))
    print("mean cosine similarity between the words of an attribute (1 = indistinguishable):")
    print(f"{'words':16s} " + " ".join(f"{s:>21s}" for s in TEXT_STAGES))
    for attribute, stages in results["word similarity"].items():
        print(f"{attribute:16s} " + " ".join(
            f"{stages[s]:21.3f}" if s in stages else f"{'-':>21s}" for s in TEXT_STAGES))
    return results


if __name__ == "__main__":
    main()
