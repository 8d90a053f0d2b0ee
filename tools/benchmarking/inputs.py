"""The benchmark's synthetic inputs: one caption with two grounded phrases, smooth images, mapper-like
training dicts, padded batches and LVIS category names."""
from __future__ import annotations

import numpy as np
import torch
from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES
from detectron2.structures import Boxes, Instances

from mdetr_d2.structures import create_positive_map, spans_to_tensor


# Caption and phrase spans used for every synthetic sample (two boxes, one span each).
CAPTION = "a man in a red shirt holds a small dog on the grass ."
SPANS = [[[0, 5]], [[29, 40]]]  # "a man", "a small dog"
PHRASES = ["a man", "a red shirt", "a small dog", "the grass", "a person", "a dog", "a cat", "a car",
           "a tree", "the sky", "a chair", "a table", "a bicycle", "a bus", "a horse", "a sign",
           "a window", "a door", "a bottle", "a cup", "a phone", "a laptop", "a bag", "a hat",
           "a shoe", "a ball", "a kite", "a boat", "a bird", "a road", "a wall", "a lamp"]


def synthetic_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB uint8 image (gradients + noise): realistic enough for timing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def training_inputs(model, tokenizer, batch: int, h: int, w: int) -> list[dict]:
    """Mapper-like training dicts (``image`` CHW float 0-255 RGB, ``caption``, ``instances``)."""
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


def padded_batch(model, inputs: list[dict]):
    """The normalized, padded image tensor of ``inputs`` and its padding mask."""
    images = model.preprocess_image(inputs)
    return images.tensor, model.padding_mask(images)


def lvis_names(n: int) -> list[str]:
    """The first ``n`` LVIS v1 category names, by id (Detectron2 ships the list)."""
    return [c["name"] for c in sorted(LVIS_CATEGORIES, key=lambda c: c["id"])][:n]
