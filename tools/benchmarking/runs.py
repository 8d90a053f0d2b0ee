"""The benchmark's runs, each adding its rows to the results: inference, export, training, class
prompts and many captions, ours in each backbone mode (and the official code when given)."""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import statistics

import torch
from detectron2.utils.events import EventStorage

from mdetr_d2.engine.optimizer import build_mdetr_optimizer
from mdetr_d2.export import ExportedMDETR, export_mdetr
from mdetr_d2.export.exporter import raw_outputs

from .compare import fp64_check, max_abs_diff, ours_outputs
from .inputs import PHRASES, lvis_names, padded_batch, synthetic_image, training_inputs
from .measure import amp_autocast, peak_memory, summary, timed, timed_interleaved

logger = logging.getLogger("mdetr_d2.benchmark")  # the tool's log name


def run_inference(args, models: dict, official, device, results: dict) -> None:
    """The network forward on padded batches (``--batch-sizes``), the modes and the official code
    interleaved, with the outputs compared to the official ones."""
    first = next(iter(models.values()))
    for batch in args.batch_sizes:
        inputs = training_inputs(first, first.text_encoder.tokenizer, batch, args.short_side, args.long_side)
        images, mask = padded_batch(first, inputs)
        captions = [x["caption"] for x in inputs]
        row = {"batch": batch, "input": list(images.shape[-2:]), "ours": {}}

        def forward(model):
            def fn():
                with torch.no_grad(), amp_autocast(args, device):
                    return model.forward_network(images, mask, captions)
            return fn

        fns = {mode: forward(model) for mode, model in models.items()}
        if official is not None:
            def theirs():
                with torch.no_grad(), amp_autocast(args, device):
                    return official.forward(images, mask, captions)

            fns["official"] = theirs
        times = timed_interleaved(fns, args.iters, args.warmup, device)
        for name, fn in fns.items():
            entry = {**summary(times[name], batch), "peak_mb": peak_memory(fn, device)}
            if name == "official":
                row["official"] = entry
            else:
                row["ours"][name] = entry
        if official is not None:
            with amp_autocast(args, device):
                reference = official.outputs(images, mask, captions)
                mine = {mode: ours_outputs(m, images, mask, captions) for mode, m in models.items()}
            row["speedup"] = {mode: row["ours"][mode]["throughput"] / row["official"]["throughput"]
                              for mode in models}
            row["max_abs_diff"] = {mode: max_abs_diff(out, reference) for mode, out in mine.items()}
            # The scale of each output, to read the differences against.
            row["official_max_abs"] = {k: reference[k].abs().max().item()
                                       for k in ("pred_logits", "pred_boxes", "res5")}
            row["outputs_agree"] = {mode: all(v <= args.atol for v in d.values())
                                    for mode, d in row["max_abs_diff"].items()}
            if args.fp64_check:
                row["fp64"] = fp64_check(models, official, images, mask, captions,
                                         {**mine, "official": reference})
        results["inference"].append(row)
        logger.info("inference %s", json.dumps(row))


def run_export(args, models: dict, device, results: dict) -> None:
    """Eager vs TorchScript vs onnxruntime on the same weights and padded batches (CPU)."""
    if device.type != "cpu":
        raise ValueError("--export measures CPU runtimes: run with --device cpu")
    for mode, model in models.items():
        runtimes = {}
        for fmt in args.export:
            folder = os.path.join(args.cache_dir, "export", mode, fmt)
            export_mdetr(model, folder, fmt, check=False)
            name = "onnxruntime" if fmt == "onnx" else fmt
            runtimes[name] = ExportedMDETR(folder, num_threads=torch.get_num_threads())
        for batch in args.export_batch_sizes:
            inputs = training_inputs(model, model.text_encoder.tokenizer, batch, args.short_side,
                                     args.long_side)
            images, mask = padded_batch(model, inputs)
            sizes = torch.tensor(model.preprocess_image(inputs).image_sizes)
            captions = [x["caption"] for x in inputs]
            fns = {"eager": lambda: raw_outputs(model, images, mask, captions)}
            for name, runtime in runtimes.items():
                fns[name] = lambda r=runtime: r.network(images, sizes, captions)
            times = timed_interleaved(fns, args.iters, args.warmup, device)
            row = {"mode": mode, "batch": batch, "input": list(images.shape[-2:])}
            row.update({name: summary(times[name], batch) for name in fns})
            reference = fns["eager"]()
            outputs = {name: fns[name]() for name in runtimes}
            row["max_abs_diff"] = {name: {k: (v - reference[k]).abs().max().item()
                                          for k, v in out.items()}
                                   for name, out in outputs.items()}
            if args.fp64_check:
                exact = raw_outputs(copy.deepcopy(model).double(), images.double(), mask, captions)
                row["fp32_vs_fp64"] = {
                    name: {k: (v.double() - exact[k]).abs().max().item() for k, v in out.items()}
                    for name, out in {"eager": reference, **outputs}.items()}
            results["export"].append(row)
            logger.info("export %s", json.dumps(row))


def run_training(args, cfg, models: dict, official, device, results: dict) -> None:
    """Full training steps (``--train-batch-sizes``): iterations/s and the peak memory of a step."""
    clip = 0.1  # official --clip_max_norm

    def official_optimizer(module):
        # The official main.py: torch.optim.AdamW with PyTorch's default (per-parameter loop on CPU).
        return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-4)

    def ours_step(model, inputs):
        opt = build_mdetr_optimizer(cfg, model)  # what MDETRTrainer trains with (fused AdamW groups)

        def step():
            with amp_autocast(args, device):
                losses = model(inputs)
            loss = sum(losses.values())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            # Gradients freed after the step, not before the next one: the models timed in turn do
            # not hold each other's gradients.
            opt.zero_grad(set_to_none=True)
            return loss
        return step

    first = next(iter(models.values()))
    for batch in args.train_batch_sizes:
        inputs = training_inputs(first, first.text_encoder.tokenizer, batch, args.short_side, args.long_side)
        row = {"batch": batch, "ours": {}}
        for model in models.values():
            model.train()
        fns = {mode: ours_step(model, inputs) for mode, model in models.items()}
        if official is not None:
            om = official.model
            om.train()
            oopt = official_optimizer(om)
            images, mask = padded_batch(first, inputs)
            targets, pmap = official.targets(first, inputs, images)
            captions = [x["caption"] for x in inputs]

            def official_step():
                with amp_autocast(args, device):
                    outputs = official.forward(images, mask, captions)
                    loss_dict = official.criterion(outputs, targets, pmap)
                loss = sum(loss_dict[k] * official.weight_dict[k] for k in loss_dict if k in official.weight_dict)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(om.parameters(), clip)
                oopt.step()
                oopt.zero_grad(set_to_none=True)
                return loss

            fns["official"] = official_step
        with EventStorage():
            times = timed_interleaved(fns, args.train_iters, args.warmup, device)
            for name, fn in fns.items():
                entry = {**summary(times[name], batch), "iters_per_s": 1 / statistics.median(times[name]),
                         "peak_mb": peak_memory(fn, device)}
                if name == "official":
                    row["official"] = entry
                else:
                    row["ours"][name] = entry
        if official is not None:
            row["speedup"] = {mode: row["ours"][mode]["iters_per_s"] / row["official"]["iters_per_s"]
                              for mode in models}
            om.eval()
        for model in models.values():
            model.eval()
        results["training"].append(row)
        logger.info("training %s", json.dumps(row))


def run_class_prompts(args, models: dict, official, device, results: dict) -> None:
    """Class-prompt detection of N LVIS names on one image: both styles, and the official loop (with
    the exact backbone mode when measured: the official arithmetic, so the gain is the rest's)."""
    mode = "exact" if "exact" in models else next(iter(models))
    model = models[mode]
    names = lvis_names(args.class_prompts)
    h, w = args.short_side, args.long_side
    x = {"image": torch.from_numpy(synthetic_image(h, w, 11).transpose(2, 0, 1).astype("float32")),
         "height": h, "width": w, "classes": names}
    settings = model.class_prompts
    last = {}

    def ours(style: str):
        def detect():
            model.class_prompts = dataclasses.replace(settings, style=style)  # the cache keeps both
            with torch.no_grad(), amp_autocast(args, device):
                last[style] = model([x])[0]
        return detect

    fns = {"per_class": ours("per_class"), "joined": ours("joined")}
    if official is not None:
        images, mask = padded_batch(model, [x])
        official_detect = official.class_prompt_detector(images, mask, names, (h, w),
                                                         settings.chunk_size)

        def theirs():
            with amp_autocast(args, device):
                last["official"] = official_detect()

        fns["official"] = theirs
    # At least one warm-up round: it encodes the prompts, which the official loop did beforehand.
    times = timed_interleaved(fns, args.iters, max(args.warmup, 1), device)

    def captions(style: str) -> int:
        model.class_prompts = dataclasses.replace(settings, style=style)
        return sum(len(c.captions) for c in model.encoded_class_prompts(names)[0].chunks)

    row = {"names": len(names), "input": [h, w], "mode": mode, "chunk_size": settings.chunk_size,
           "captions": {style: captions(style) for style in ("per_class", "joined")}}
    model.class_prompts = settings
    for name in fns:
        row[name] = summary(times[name], 1)
    row["joined_speedup_over_per_class"] = (row["joined"]["throughput"]
                                            / row["per_class"]["throughput"])
    if official is not None:
        row["per_class_speedup"] = row["per_class"]["throughput"] / row["official"]["throughput"]
        row["joined_speedup"] = row["joined"]["throughput"] / row["official"]["throughput"]
        scores, boxes, labels = last["official"]
        every = last["per_class"]["all_instances"]
        row["max_abs_diff"] = {"scores": (every.scores - scores).abs().max().item(),
                               "boxes_px": (every.pred_boxes.tensor - boxes).abs().max().item()}
        row["labels_equal"] = bool(torch.equal(every.pred_classes, labels))
        row["outputs_agree"] = row["labels_equal"] and row["max_abs_diff"]["scores"] <= args.atol
    results["class_prompts"] = row
    logger.info("class prompts %s", json.dumps(row))


def run_captions(args, predictor, device, results: dict) -> None:
    """``--captions`` phrases on one image: ``predict_captions`` against a loop of single calls."""
    n = args.captions
    phrases = [PHRASES[i % len(PHRASES)] for i in range(n)]
    image = synthetic_image(args.short_side, args.long_side, 7)[:, :, ::-1]  # BGR, as the predictor expects

    last = {}

    def batched():
        with amp_autocast(args, device):
            last["batched"] = predictor.predict_captions(image, phrases)

    def naive():
        with amp_autocast(args, device):
            last["naive"] = [predictor(image, p) for p in phrases]

    t_batched = timed(batched, args.iters, min(args.warmup, 1), device)
    t_naive = timed(naive, max(1, args.iters // 2), 0, device)  # N times slower: fewer repeats
    diff = max((x["instances"].pred_boxes.tensor - y["instances"].pred_boxes.tensor).abs().max().item()
               for x, y in zip(last["batched"], last["naive"]))
    row = {"captions": n, "batched": summary(t_batched, n), "naive_loop": summary(t_naive, n),
           "speedup": statistics.median(t_naive) / statistics.median(t_batched), "max_abs_box_diff_px": diff}
    results["captions"] = row
    logger.info("captions %s", json.dumps(row))
