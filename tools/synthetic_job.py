#!/usr/bin/env python
"""The embedded default, end to end, with no download: generate the synthetic grounding world, train a
small MDETR on it from scratch, evaluate it with the real evaluators (REC P@1, phrase-grounding R@1,
class-agnostic box AP; class-prompt box AP over the shape names with Detectron2's COCOEvaluator,
both prompt styles) beside text-blind baselines, and draw what it grounds on validation images.

    python tools/synthetic_job.py [--config-file configs/synthetic/mdetr_synthetic.yaml]
        [--output output/synthetic] [--figures docs] [KEY VALUE ...]

Writes ``<output>/results.json`` (metrics, baselines, timings), ``<output>/training_curves.png``,
``<output>/demo/*.png`` and ``<output>/demo_strip.png``; ``--figures DIR`` also copies the two
pictures there.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from torchvision.ops import box_convert, generalized_box_iou

from mdetr_d2 import add_mdetr_config
from mdetr_d2.engine import MDETRTrainer, launch
from mdetr_d2.predictor import MDETRPredictor
from mdetr_d2.visualization import draw_prediction
from mdetr_synthetic import default_synthetic_root, generate_synthetic_dataset, register_synthetic
from mdetr_synthetic.scenes import sample_scene, scene_rng

logger = logging.getLogger("mdetr_d2.synthetic_job")
DEFAULT_CONFIG = "configs/synthetic/mdetr_synthetic.yaml"


def train_and_evaluate(cfg_yaml: str, data_root: str, threads: int) -> None:
    """One training process: train, evaluate (EMA weights) at the end, rank 0 writes the metrics."""
    torch.set_num_threads(threads)
    cfg = CfgNode.load_cfg(cfg_yaml)
    # Seeds the weights and (through rank 0's shared seed) the sampler's order, as default_setup does.
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    register_synthetic(data_root)  # a spawned process starts with no registration of the world
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mdetr_d2")
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")
    trainer = MDETRTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    if comm.is_main_process():  # the evaluation hook ran the test sets after the last iteration
        metrics = trainer._last_eval_results
        (Path(cfg.OUTPUT_DIR) / "eval_metrics.json").write_text(json.dumps(metrics, default=float))


def text_blind_baselines(root: Path, dataset: str) -> dict[str, float]:
    """P@1 (GIoU >= 0.5, as the REC evaluator) of answers that ignore the text: the largest, the
    smallest, the most central object, and a uniformly random one (its expected P@1)."""
    params = json.loads((root / "manifest.json").read_text())["params"]
    split = dataset.rsplit("_", 1)[1]
    hits = {"largest object": [], "smallest object": [], "most central object": [], "random object": []}
    for record in DatasetCatalog.get(dataset):
        index = int(Path(record["file_name"]).stem)
        scene = sample_scene(scene_rng(params["seed"], split, index), params["min_side"], params["max_side"])
        boxes = box_convert(torch.tensor([o.bbox for o in scene.objects]), "xywh", "xyxy")
        gt = box_convert(torch.tensor([record["annotations"][0]["bbox"]]), "xywh", "xyxy")
        correct = (generalized_box_iou(boxes, gt)[:, 0] >= 0.5).float()
        areas = torch.tensor([o.area for o in scene.objects])
        centers = torch.tensor([o.center for o in scene.objects])
        offcenter = (centers - torch.tensor([scene.width / 2, scene.height / 2])).norm(dim=1)
        hits["largest object"].append(float(correct[areas.argmax()]))
        hits["smallest object"].append(float(correct[areas.argmin()]))
        hits["most central object"].append(float(correct[offcenter.argmin()]))
        hits["random object"].append(float(correct.mean()))
    return {k: float(np.mean(v)) for k, v in hits.items()}


def last_run_rows(rows: list[dict]) -> list[dict]:
    """The training rows of the latest run in a Detectron2 ``metrics.json``, which every run in the same
    output folder appends to: a run starts wherever the iteration goes back."""
    rows = [r for r in rows if "total_loss" in r]
    starts = [i for i in range(1, len(rows)) if rows[i]["iteration"] <= rows[i - 1]["iteration"]]
    return rows[starts[-1]:] if starts else rows


def plot_curves(metrics_file: Path, out: Path) -> None:
    """Total loss and its main terms against the iteration, from Detectron2's metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = last_run_rows([json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()])
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for key in ("total_loss", "loss_ce", "loss_bbox", "loss_giou", "loss_contrastive_align"):
        points = [(r["iteration"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (weighted)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("MDETR on the synthetic grounding world (2 CPU cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def class_prompt_ap(cfg, weights: str, dataset: str = "synthetic_detection_val") -> dict[str, dict]:
    """Box AP of the trained model used as a detector of the five shapes (class prompts, each
    style), scored by Detectron2's COCOEvaluator on the COCO detection view of the validation
    scenes."""
    results = {}
    for style in ("per_class", "joined"):
        c = cfg.clone()
        c.defrost()
        c.MODEL.WEIGHTS = weights
        c.DATASETS.TEST = (dataset,)
        c.MODEL.MDETR.CLASS_PROMPTS.STYLE = style
        c.OUTPUT_DIR = str(Path(cfg.OUTPUT_DIR) / f"class_prompts_{style}")
        model = MDETRTrainer.load_for_evaluation(c, MDETRTrainer.build_model(c))
        results[style] = MDETRTrainer.test(c, model)["bbox"]
    return results


def run_demo(cfg, weights: str, dataset: str, out_dir: Path, count: int) -> list[Path]:
    """Predict and draw the first ``count`` datapoints of ``dataset`` (EMA weights)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    predictor = MDETRPredictor(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        prediction = predictor(image, record["caption"])
        picture = draw_prediction(image[:, :, ::-1], prediction, record["caption"], top_k=1)
        path = out_dir / f"{dataset}_{record['image_id']}.png"
        cv2.imwrite(str(path), picture[:, :, ::-1])
        paths.append(path)
    return paths


def _strip(paths: list[Path], out: Path, height: int = 192) -> None:
    """The demo pictures side by side (scaled to one height) in one PNG."""
    images = []
    for p in paths:
        im = cv2.imread(str(p))
        images.append(cv2.resize(im, (round(im.shape[1] * height / im.shape[0]), height)))
    cv2.imwrite(str(out), np.concatenate(images, axis=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--data-root", default=default_synthetic_root())
    parser.add_argument("--num-train", type=int, default=2000, help="training images to generate")
    parser.add_argument("--num-val", type=int, default=200, help="validation images to generate")
    parser.add_argument("--output", default=None, help="output folder (default: the config's OUTPUT_DIR)")
    parser.add_argument("--figures", help="also copy the curve plot and a demo strip into this folder")
    parser.add_argument("--demo-images", type=int, default=4)
    parser.add_argument("--num-processes", type=int, default=2,
                        help="data-parallel training processes (CPU: one thread each; 2 cores -> 2)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    start = time.time()
    root = Path(args.data_root)
    generate_synthetic_dataset(root, num_train=args.num_train, num_val=args.num_val,
                               num_test=args.num_val)
    register_synthetic(root)
    generated = time.time()

    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.MDETR.TEXT_ENCODER.NAME = str(root / "text_encoder")
    if args.output:
        cfg.OUTPUT_DIR = args.output
    cfg.freeze()
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(str(out), name="mdetr_d2.synthetic_job")

    train_start = time.time()
    # On CPU, processes with one thread each use 2 cores better than one process with two threads.
    threads = 1 if args.num_processes > 1 else torch.get_num_threads()
    launch(train_and_evaluate, args.num_processes, args=(cfg.dump(), str(root), threads))
    metrics = json.loads((out / "eval_metrics.json").read_text())
    trained = time.time()

    refexp = next((d for d in cfg.DATASETS.TEST if "refexp" in d), None)
    baselines = text_blind_baselines(root, refexp) if refexp else {}
    demo_set = refexp or cfg.DATASETS.TEST[0]
    weights = str(out / "model_final.pth")
    prompts_ap = class_prompt_ap(cfg, weights)
    demos = run_demo(cfg, weights, demo_set, out / "demo", args.demo_images)
    plot_curves(out / "metrics.json", out / "training_curves.png")
    _strip(demos, out / "demo_strip.png")

    results = {
        "metrics": metrics,
        "text_blind_baselines_P@1": baselines,
        "class_prompt_box_AP": prompts_ap,
        "seconds": {"generate": round(generated - start, 1),
                    "train_and_evaluate": round(trained - train_start, 1),
                    "total": round(time.time() - start, 1)},
        "iterations": cfg.SOLVER.MAX_ITER,
        "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "processes": args.num_processes,
        "config": args.config_file,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    if args.figures:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "training_curves.png", figures / "synthetic_training_curves.png")
        shutil.copy(out / "demo_strip.png", figures / "synthetic_demo.png")
    summary = {f"{dataset}/{task}/{k}": v for dataset, tasks in metrics.items()
               for task, values in tasks.items() for k, v in values.items()
               if k in ("synthetic_refexp/P@1", "R@1_all", "AP50")}
    logger.info("results: %s", json.dumps(summary))
    logger.info("text-blind baselines (P@1): %s", json.dumps(baselines))
    logger.info("class-prompt box AP / AP50 (COCOEvaluator, %%): %s", json.dumps(
        {style: [round(r["AP"], 1), round(r["AP50"], 1)] for style, r in prompts_ap.items()}))
    logger.info("time: %s; wrote %s", json.dumps(results["seconds"]), out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
