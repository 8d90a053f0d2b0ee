#!/usr/bin/env python
"""Benchmark MDETR: inference and training speed, peak memory, the many-captions mode, and (optionally)
the official MDETR code on the same weights, side by side.

What is measured (all on one synthetic padded batch, at the evaluation resolution by default):

* both backbone arithmetic modes (``--modes``) on the same weights: "exact" (the default config: the
  official arithmetic) and "fast" (``MODEL.MDETR.BACKBONE_FAST_PATH``: folded BN, channels-last);
* inference: latency and images/s of the network (backbone, text encoder, cross-encoder, decoder,
  heads), for batch 1 and a larger batch;
* training: iterations/s of a full step (forward, losses with Hungarian matching, backward, gradient
  clipping, AdamW step) and the peak memory of the step;
* many captions (``--captions N``): N phrases on one image through
  :meth:`MDETRPredictor.predict_captions` (backbone once, captions batched) against a naive loop of
  N single-caption calls;
* class prompts (``--class-prompts N``): detection of the first N LVIS v1 category names on one
  image, both styles (``per_class``, the official LVIS protocol, and ``joined``), with the prompts
  encoded beforehand as the official evaluation does; with ``--official`` also the official
  per-chunk loop of ``scripts/eval_lvis.py`` on the same weights, and how its detections agree
  with ``per_class``;
* export (``--export torchscript onnx``): the model exported with ``tools/export_model.py``'s
  code in each backbone mode, the same padded batches (``--export-batch-sizes``, default 1 and 4)
  through the eager model, the TorchScript graphs and onnxruntime (CPU), images/s of each and the
  max |exported - eager| of the raw outputs (``--fp64-check``: also each one's distance from the
  eager model in float64);
* with ``--official PATH`` (a checkout of the official MDETR code, not part of this repository): the
  official model is built with the same weights (our state dict converted back to official names),
  the outputs (logits, boxes, projections, ``res5`` features) are compared (``--atol``, strict for the
  exact mode), and our/official ratios are reported; ``--fp64-check`` also runs everything in float64
  and reports each float32 run's distance from it. ResNet backbones only (the official EfficientNet
  path needs timm 0.4.x, reference §9).

Memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU the resident-set high-water mark
(``VmHWM``), reset before each phase through ``/proc/self/clear_refs`` (Linux), so each phase reports
its own peak. Both numbers are for the whole process (the models' weights included).

Example (R101 + a roberta-base-sized random text encoder, CPU, with the official comparison)::

    python tools/benchmark.py --config-file configs/Base-MDETR.yaml --text-encoder synthetic-base \\
        --official /path/to/mdetr --batch-sizes 1 2 --iters 3 --captions 16 --output bench.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from mdetr_d2.predictor import MDETRPredictor

# The helper package beside this script (tools/benchmarking/), imported from the script's folder
# as Detectron2 projects import theirs.
from benchmarking.inputs import synthetic_image
from benchmarking.model_setup import build_cfg, calibrate_frozen_bn, models_by_mode
from benchmarking.official import OfficialMDETR
from benchmarking.report import format_table
from benchmarking.runs import run_captions, run_class_prompts, run_export, run_inference, run_training

logger = logging.getLogger("mdetr_d2.benchmark")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="", help="model config (yaml)")
    p.add_argument("--official-checkpoint", default="", help="build from an official MDETR checkpoint instead")
    p.add_argument("--text-encoder", default="",
                   help="text encoder folder/name, or synthetic-base / synthetic-tiny (random, made locally)")
    p.add_argument("--official", default="", help="checkout of the official MDETR code to compare with")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[1, 2],
                   help="inference batches (none: skip)")
    p.add_argument("--train-batch-sizes", type=int, nargs="*", default=[2], help="training batches (none: skip)")
    p.add_argument("--short-side", type=int, default=800)
    p.add_argument("--long-side", type=int, default=1066)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--train-iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--captions", type=int, default=0, help="many-captions mode: N phrases on one image")
    p.add_argument("--class-prompts", type=int, default=0,
                   help="class-prompt detection of the first N LVIS names on one image (1203: all)")
    p.add_argument("--export", nargs="*", choices=["torchscript", "onnx"], default=[],
                   help="also export the model and time eager vs these runtimes (CPU)")
    p.add_argument("--export-batch-sizes", type=int, nargs="*", default=[1, 4],
                   help="batches of the export rows")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    p.add_argument("--modes", nargs="+", choices=["exact", "fast"], default=["exact", "fast"],
                   help="backbone arithmetic modes to measure (same weights): exact = the official arithmetic "
                        "(default config), fast = MODEL.MDETR.BACKBONE_FAST_PATH (folded BN, channels-last)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the transformer")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="max |ours - official| allowed on the outputs of the exact mode (exit code 1 beyond)")
    p.add_argument("--fp64-check", action="store_true",
                   help="with --official: also compare both models run in float64 (same function?)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "mdetr_d2_benchmark"))
    p.add_argument("--output", default="", help="write the results as json here")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = build_cfg(args)
    device = torch.device(cfg.MODEL.DEVICE)
    torch.manual_seed(args.seed)
    predictor = MDETRPredictor(cfg, image_format="BGR")  # loads MODEL.WEIGHTS when set
    model = predictor.model.eval()
    if not cfg.MODEL.WEIGHTS and hasattr(model.backbone, "body") and hasattr(model.backbone.body, "layer4"):
        images = torch.from_numpy(synthetic_image(args.short_side // 2, args.long_side // 2, 1).transpose(2, 0, 1))
        images = ((images.float().to(device) - model.pixel_mean) / model.pixel_std)[None]
        calibrate_frozen_bn(model.backbone, images)

    models = models_by_mode(cfg, model, args.modes)
    official = None
    if args.official:
        official = OfficialMDETR(args.official, OfficialMDETR.args_from_cfg(cfg), device)
        official.load_from(model)
        official.model.eval()
    if args.compile:
        for m in models.values():
            m.backbone.compile()
            m.transformer.compile()

    results = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(),
        "model": {"backbone": cfg.MODEL.BACKBONE.NAME, "depth": cfg.MODEL.RESNETS.DEPTH,
                  "hidden_dim": cfg.MODEL.MDETR.HIDDEN_DIM, "enc_layers": cfg.MODEL.MDETR.ENC_LAYERS,
                  "dec_layers": cfg.MODEL.MDETR.DEC_LAYERS, "text_encoder": cfg.MODEL.MDETR.TEXT_ENCODER.NAME,
                  "text_hidden": model.text_encoder.output_dim,
                  "text_layers": model.text_encoder.body.config.num_hidden_layers,
                  "params_m": sum(p.numel() for p in model.parameters()) / 1e6},
        "options": {"amp": args.amp, "modes": args.modes, "compile": args.compile,
                    "iters": args.iters, "train_iters": args.train_iters, "warmup": args.warmup},
        "train_input": f"{args.short_side}x{args.long_side}",
        "official": bool(official), "inference": [], "training": [], "captions": None,
        "class_prompts": None, "export": [],
        # Other jobs skew absolute times (interleaved ratios less so): how busy was the machine?
        "load_average": {"start": os.getloadavg()[0], "end": None, "cpus": os.cpu_count()},
    }
    run_inference(args, models, official, device, results)
    if args.export:  # before training, which changes the weights
        run_export(args, models, device, results)
    if args.class_prompts:  # before training, which changes both models' weights
        run_class_prompts(args, models, official, device, results)
    if args.train_batch_sizes:
        run_training(args, cfg, models, official, device, results)
    if args.captions:
        run_captions(args, predictor, device, results)
    results["load_average"]["end"] = os.getloadavg()[0]
    table = format_table(results)
    results["table"] = table
    sys.stdout.write(table + "\n")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2, default=str))
    # Strict for the exact mode only: the fast mode's distance is measured and reported, not bounded.
    agree = [r["outputs_agree"]["exact"] for r in results["inference"] if "exact" in r.get("outputs_agree", {})]
    prompts = results["class_prompts"] or {}
    if prompts.get("mode") == "exact" and "outputs_agree" in prompts:
        agree.append(prompts["outputs_agree"])
    if args.amp == "none" and not all(agree):
        logger.error("ours (exact mode) and the official outputs differ by more than %g", args.atol)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
