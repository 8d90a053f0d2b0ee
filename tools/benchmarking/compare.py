"""Comparing outputs: max |a - b| of the network outputs (and ``res5`` features), ours collected
for the comparison, and the float64 check of both models."""
from __future__ import annotations

import torch


def max_abs_diff(ours: dict, theirs: dict,
                 keys=("pred_logits", "pred_boxes", "proj_queries", "proj_tokens", "res5"),
                 dtype: torch.dtype = torch.float32) -> dict:
    """max |ours - theirs| of each output in ``keys`` both have (in ``dtype``), and of the
    auxiliary decoder layers' logits and boxes together (``aux_outputs``)."""
    diffs = {}
    for k in keys:
        if k in ours and k in theirs:
            diffs[k] = (ours[k].to(dtype) - theirs[k].to(dtype)).abs().max().item()
    for i, layer in enumerate(theirs.get("aux_outputs", [])):
        for k in ("pred_logits", "pred_boxes"):
            d = (ours["aux_outputs"][i][k].to(dtype) - layer[k].to(dtype)).abs().max().item()
            diffs["aux_outputs"] = max(diffs.get("aux_outputs", 0.0), d)
    return diffs


def with_res5(outputs: dict, res5: torch.Tensor) -> dict:
    """``outputs`` with the backbone's stride-32 features added under ``res5``."""
    return {**outputs, "res5": res5}


def ours_outputs(model, images, mask, captions) -> dict:
    """The network outputs and the backbone's stride-32 features, for the comparisons (not timed)."""
    with torch.no_grad():
        return with_res5(model.forward_network(images, mask, captions), model.backbone(images)["res5"])


def fp64_check(models: dict, official, images: torch.Tensor, mask: torch.Tensor, captions: list[str],
               fp32_outputs: dict) -> dict:
    """Both models once in float64. ``same_function``: ours (each mode) vs official in float64, where
    float32 rounding is gone and what is left measures whether the two compute the same function;
    ``fp32_vs_fp64``: how far each float32 run (our modes, the official code) is from the float64 one."""
    try:
        official.model.double()
        reference = official.outputs(images.double(), mask, captions)
        same = {}
        for mode, model in models.items():
            model.double()
            try:
                same[mode] = max_abs_diff(ours_outputs(model, images.double(), mask, captions), reference,
                                          dtype=torch.float64)
            finally:
                model.float()  # float32 -> float64 -> float32 is exact: the weights are unchanged
    finally:
        official.model.float()
    return {"same_function": same,
            "fp32_vs_fp64": {name: max_abs_diff(out, reference, dtype=torch.float64)
                             for name, out in fp32_outputs.items()}}
