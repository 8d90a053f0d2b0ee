"""Pictures of what MDETR grounds: boxes labelled with their phrases, masks, QA answers."""
from __future__ import annotations

import numpy as np
from detectron2.utils.visualizer import Visualizer


def draw_prediction(image_rgb: np.ndarray, prediction: dict, caption: str, top_k: int = 3,
                    min_score: float = 0.5) -> np.ndarray:
    """An RGB picture of the most confident boxes (at least one), each labelled with its phrase."""
    inst = prediction["instances"].to("cpu")
    order = inst.scores.argsort(descending=True)
    keep = [int(i) for i in order[:top_k] if inst.scores[i] >= min_score] or [int(order[0])]
    inst = inst[keep]
    labels = [f"{phrase or '?'} {score:.2f}" for phrase, score in zip(inst.pred_phrases, inst.scores.tolist())]
    # Small images are drawn enlarged so that the labels stay readable.
    vis = Visualizer(image_rgb, scale=max(1.0, 480 / max(image_rgb.shape[:2])))
    masks = inst.pred_masks.numpy() if inst.has("pred_masks") else None
    vis.overlay_instances(boxes=inst.pred_boxes.tensor.numpy(), labels=labels, masks=masks)
    title = caption if "qa" not in prediction else f"{caption} -> {prediction['qa']['answer']}"
    vis.draw_text(title, (2, 1), horizontal_alignment="left")
    return vis.output.get_image()
