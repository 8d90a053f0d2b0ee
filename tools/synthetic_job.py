#!/usr/bin/env python
"""The embedded default, end to end, with no download: generate the synthetic grounding world, train a
small MDETR on it from scratch and evaluate it with ``tools/train_net.py`` (REC P@1 overall and per
expression type, phrase-grounding R@1, class-agnostic box AP, class-prompt box AP over the shape
names with Detectron2's COCOEvaluator), compare with text-blind baselines, and draw the training
curves and what it grounds on validation images.

    python tools/synthetic_job.py [--config-file configs/synthetic/mdetr_synthetic.yaml]
        [--output output/synthetic] [--figures docs] [KEY VALUE ...]

Writes ``<output>/results.json`` (metrics, P@1 per expression type, baselines, validation curve,
the wall time of each phase), ``<output>/training_curves.png`` and ``<output>/demo.png``, next to
``tools/train_net.py``'s own outputs (``log.txt``, ``metrics.json``, ``model_final.pth``);
``--figures DIR`` also copies the two pictures there.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from torchvision.ops import box_convert, generalized_box_iou

from mdetr_d2 import add_mdetr_config
from mdetr_d2.engine import default_argument_parser, launch
from mdetr_d2.predictor import MDETRPredictor
from mdetr_synthetic import default_synthetic_root, generate_synthetic_dataset, register_synthetic
from mdetr_synthetic.language import EXPRESSION_TYPES
from mdetr_synthetic.scenes import sample_scene, scene_rng

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_net  # noqa: E402  (tools/train_net.py: the job trains and evaluates through its main)

# Not under "mdetr_d2": the package's loggers are set up by train_net's set-up, as for any recipe.
logger = logging.getLogger("synthetic_job")
DEFAULT_CONFIG = "configs/synthetic/mdetr_synthetic.yaml"
REFEXP_VAL, FLICKR_VAL = "synthetic_refexp_val", "synthetic_flickr_val"
DETECTION_VAL = "synthetic_detection_val"  # the COCO detection view: class-prompt box AP
P_AT_1 = "synthetic_refexp/P@1"


# --------------------------------------------------------------------------------------------------
# Training and evaluation: tools/train_net.py
# --------------------------------------------------------------------------------------------------
def _train_net_main(args: argparse.Namespace, data_root: str) -> None:
    """``train_net.main`` in a launched process, which starts with the default dataset
    registrations only: the world at ``data_root`` is registered first."""
    register_synthetic(data_root)
    train_net.main(args)


def train_with_train_net(config_file: str, data_root: Path, output: Path, num_processes: int,
                         opts: list[str]) -> None:
    """``tools/train_net.py --config-file CONFIG --num-gpus N OPTS`` (N CPU processes without CUDA):
    trains, evaluates the EMA weights on ``DATASETS.TEST`` every ``TEST.EVAL_PERIOD`` iterations and
    at the end, and writes ``model_final.pth`` and ``metrics.json`` into ``output``."""
    args = default_argument_parser().parse_args([
        "--config-file", config_file, "--num-gpus", str(num_processes), *opts,
        "MODEL.MDETR.TEXT_ENCODER.NAME", str(data_root / "text_encoder"), "OUTPUT_DIR", str(output),
    ])
    logger.info("tools/train_net.py --config-file %s --num-gpus %d %s", config_file, num_processes,
                " ".join(args.opts))
    launch(_train_net_main, num_processes, dist_url=args.dist_url, args=(args, str(data_root)))


def class_prompt_ap_joined(config_file: str, data_root: Path, output: Path, opts: list[str]) -> dict:
    """Class-prompt box AP of the trained model with the "joined" prompt style (the shape names in
    one caption), by ``tools/train_net.py --eval-only`` in this process (Detectron2's
    COCOEvaluator on the COCO detection view of the validation scenes); the training's own
    evaluations score the config's style, "per_class" (the official protocol)."""
    args = default_argument_parser().parse_args([
        "--config-file", config_file, "--eval-only", *opts,
        "MODEL.WEIGHTS", str(output / "model_final.pth"),
        "MODEL.MDETR.TEXT_ENCODER.NAME", str(data_root / "text_encoder"),
        "MODEL.MDETR.CLASS_PROMPTS.STYLE", "joined", "DATASETS.TEST", f"('{DETECTION_VAL}',)",
        "OUTPUT_DIR", str(output / "class_prompts_joined"),
    ])
    return train_net.main(args)["bbox"]  # Detectron2 drops the dataset level for a single test set


def read_metrics(metrics_file: Path) -> list[dict]:
    """Every row of a Detectron2 ``metrics.json`` (one JSON object per line)."""
    return [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]


def evaluation_rows(metrics: list[dict]) -> list[tuple[int, dict]]:
    """The evaluations of the latest run in train_net's ``metrics.json`` rows as ``(iterations
    done, {dataset: {task: {metric: value}}})``, in order (Detectron2 writes them flattened with
    "/", at the 0-based iteration during training and at ``MAX_ITER`` for the one after training)."""
    rows = last_run(metrics)
    last_step = max((r["iteration"] for r in rows if "total_loss" in r), default=-1)
    out = []
    for row in rows:
        nested: dict = defaultdict(lambda: defaultdict(dict))
        for key, value in row.items():
            parts = key.split("/", 2)
            if len(parts) == 3 and parts[0] in DatasetCatalog.list():
                nested[parts[0]][parts[1]][parts[2]] = value
        if nested:
            done = row["iteration"] + (row["iteration"] <= last_step)
            out.append((done, json.loads(json.dumps(nested))))
    return out


def by_expression_type(refexp: dict, metric: str = "P@1") -> dict[str, float]:
    """``{type: value}`` from the RefExp evaluator's per-type rows (``<dataset>/<type>/P@1``)."""
    return {t: refexp[f"synthetic_refexp/{t}/{metric}"] for t in EXPRESSION_TYPES
            if f"synthetic_refexp/{t}/{metric}" in refexp}


# --------------------------------------------------------------------------------------------------
# Text-blind baselines
# --------------------------------------------------------------------------------------------------
def text_blind_baselines(root: Path, dataset: str = REFEXP_VAL) -> dict[str, dict[str, float]]:
    """P@1 (GIoU >= 0.5, as the REC evaluator) of answers that ignore the text: the largest, the
    smallest, the most central object, and a uniformly random one (its expected P@1); overall
    ("all") and per expression type."""
    params = json.loads((root / "manifest.json").read_text())["params"]
    split = dataset.rsplit("_", 1)[1]
    entries = json.loads(Path(MetadataCatalog.get(dataset).json_file).read_text())["images"]
    types = {e["id"]: e["expression_type"] for e in entries}
    hits: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in DatasetCatalog.get(dataset):
        index = int(Path(record["file_name"]).stem)
        scene = sample_scene(scene_rng(params["seed"], split, index), params["min_side"],
                             params["max_side"])
        boxes = box_convert(torch.tensor([o.bbox for o in scene.objects]), "xywh", "xyxy")
        gt = box_convert(torch.tensor([record["annotations"][0]["bbox"]]), "xywh", "xyxy")
        correct = (generalized_box_iou(boxes, gt)[:, 0] >= 0.5).float()
        areas = torch.tensor([o.area for o in scene.objects])
        centers = torch.tensor([o.center for o in scene.objects])
        offcenter = (centers - torch.tensor([scene.width / 2, scene.height / 2])).norm(dim=1)
        answers = {"largest object": float(correct[areas.argmax()]),
                   "smallest object": float(correct[areas.argmin()]),
                   "most central object": float(correct[offcenter.argmin()]),
                   "random object": float(correct.mean())}
        for name, hit in answers.items():
            hits[name]["all"].append(hit)
            hits[name][types[record["image_id"]]].append(hit)
    return {name: {t: float(np.mean(v)) for t, v in per_type.items()} for name, per_type in hits.items()}


# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------
def plot_curves(metrics: list[dict], evaluations: list[tuple[int, dict]], baselines: dict,
                out: Path) -> None:
    """Three panels: the training losses; validation REC P@1 and phrase R@1 over the iterations
    against the text-blind baselines; the final P@1 per expression type against a random pick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = last_run_rows(metrics)
    fig, (ax_loss, ax_val, ax_type) = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for key in ("total_loss", "loss_ce", "loss_giou", "loss_contrastive_align"):
        points = [(r["iteration"] + 1, r[key]) for r in rows if key in r]
        if points:
            ax_loss.plot(*zip(*points), label=key, linewidth=1)
    ax_loss.set(xlabel="iteration", ylabel="training loss (weighted)", yscale="log",
                title="training losses")
    ax_loss.legend(fontsize=7)

    iters = [it for it, _ in evaluations]
    ax_val.plot(iters, [ev[REFEXP_VAL]["refexp"][P_AT_1] for _, ev in evaluations], "o-",
                label="REC P@1")
    if all(FLICKR_VAL in ev for _, ev in evaluations):
        ax_val.plot(iters, [ev[FLICKR_VAL]["flickr"]["R@1_all"] for _, ev in evaluations], "s-",
                    label="phrase grounding R@1")
    for (name, values), style in zip(sorted(baselines.items()), (":", "--", "-.", (0, (1, 3)))):
        ax_val.axhline(values["all"], color="gray", linestyle=style, linewidth=1,
                       label=f"text-blind: {name}")
    ax_val.set(xlabel="iteration", ylabel="validation", ylim=(0, 1),
               title="validation (EMA weights) vs text-blind P@1")
    ax_val.legend(fontsize=7, loc="upper left")

    final = by_expression_type(evaluations[-1][1][REFEXP_VAL]["refexp"])
    types = list(final)
    x = np.arange(len(types))
    ax_type.bar(x - 0.2, [final[t] for t in types], 0.4, label="model")
    ax_type.bar(x + 0.2, [baselines["random object"].get(t, 0) for t in types], 0.4,
                color="lightgray", label="text-blind: random object")
    ax_type.set_xticks(x, [t.replace("_", "\n") for t in types], fontsize=8)
    ax_type.set(ylim=(0, 1), ylabel="REC P@1", title="final P@1 by expression type")
    ax_type.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def last_run(rows: list[dict]) -> list[dict]:
    """The rows of the latest run in a Detectron2 ``metrics.json``, which every run in the same output
    folder appends to: a run starts wherever the iteration of the training rows goes back
    (evaluation rows may be written after a training row of a later iteration)."""
    train = [i for i, r in enumerate(rows) if "total_loss" in r]
    starts = [b for a, b in zip(train, train[1:]) if rows[b]["iteration"] <= rows[a]["iteration"]]
    return rows[starts[-1]:] if starts else rows


def last_run_rows(rows: list[dict]) -> list[dict]:
    """The training rows of the latest run in a Detectron2 ``metrics.json`` (:func:`last_run`)."""
    return [r for r in last_run(rows) if "total_loss" in r]


def demo_records(dataset: str, count: int) -> list[dict]:
    """The first validation expression of each type, in type order, then the next ones in dataset
    order, up to ``count``: a fixed choice, not a selection of successes."""
    entries = json.loads(Path(MetadataCatalog.get(dataset).json_file).read_text())["images"]
    types = {e["id"]: e["expression_type"] for e in entries}
    records = DatasetCatalog.get(dataset)
    chosen: list[dict] = []
    for t in EXPRESSION_TYPES:
        chosen += [r for r in records if types[r["image_id"]] == t][:1]
    chosen += [r for r in records if r not in chosen]
    return [dict(r, expression_type=types[r["image_id"]]) for r in chosen[:count]]


def draw_demo(cfg, weights: str, dataset: str, out: Path, count: int, columns: int = 3) -> list[dict]:
    """Ground ``count`` validation expressions (:func:`demo_records`) with the trained model and draw
    them enlarged (nearest neighbour) in one picture: the referred object's ground-truth box
    dashed, the model's best box green when correct (GIoU >= 0.5), red when not, the caption above.

    Returns:
        one ``{"caption", "expression_type", "correct", "score"}`` per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = weights
    predictor = MDETRPredictor(cfg)
    records = demo_records(dataset, count)
    rows = -(-len(records) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.9 * rows), dpi=100,
                             squeeze=False)
    shown = []
    for ax, record in zip(axes.flat, records):
        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
        instances = predictor(image, record["caption"])["instances"].to("cpu")
        best = int(instances.scores.argmax())
        box = instances.pred_boxes.tensor[best]
        x, y, w, h = record["annotations"][0]["bbox"]
        gt = torch.tensor([x, y, x + w, y + h])
        correct = bool(generalized_box_iou(box[None], gt[None])[0, 0] >= 0.5)
        scale = max(1, round(300 / max(image.shape[:2])))
        big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        ax.imshow(big[:, :, ::-1])
        ax.add_patch(Rectangle((x * scale, y * scale), w * scale, h * scale, fill=False,
                               edgecolor="black", linestyle="--", linewidth=1.5))
        x0, y0, x1, y1 = (box * scale).tolist()
        color = "limegreen" if correct else "red"
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=3))
        ax.set_title("\n".join(textwrap.wrap(f'"{record["caption"]}"', 32)), fontsize=10)
        score = float(instances.scores[best])
        verdict = "correct" if correct else "wrong"
        ax.set_xlabel(f"{record['expression_type'].replace('_', ' ')}: {verdict} (score {score:.2f})",
                      color="darkgreen" if correct else "darkred", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        shown.append({"caption": record["caption"], "expression_type": record["expression_type"],
                      "correct": correct, "score": round(score, 3)})
    for ax in axes.flat[len(records):]:
        ax.axis("off")
    fig.suptitle("dashed: the referred object; green / red: the model's best box, right / wrong",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return shown


# --------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--data-root", default=default_synthetic_root())
    parser.add_argument("--num-train", type=int, default=2000, help="training images to generate")
    parser.add_argument("--num-val", type=int, default=200, help="validation images to generate")
    parser.add_argument("--output", default=None, help="output folder (default: the config's OUTPUT_DIR)")
    parser.add_argument("--figures", help="also copy the curve plot and the demo picture into this folder")
    parser.add_argument("--demo-images", type=int, default=6, help="validation expressions drawn")
    parser.add_argument("--num-processes", type=int, default=2,
                        help="data-parallel training processes (train_net's --num-gpus; CPU: 2 cores -> 2)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)

    start = time.time()
    root = Path(args.data_root)
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
    setup_logger(str(out / "synthetic_job.log"), name="synthetic_job", abbrev_name="job")

    generate_synthetic_dataset(root, num_train=args.num_train, num_val=args.num_val,
                               num_test=args.num_val)
    register_synthetic(root)
    generated = time.time()

    train_with_train_net(args.config_file, root, out, args.num_processes, list(args.opts))
    trained = time.time()
    metrics_rows = read_metrics(out / "metrics.json")
    evaluations = evaluation_rows(metrics_rows)
    metrics = evaluations[-1][1]

    joined_ap = class_prompt_ap_joined(args.config_file, root, out, list(args.opts))
    baselines = text_blind_baselines(root)
    baselined = time.time()
    weights = str(out / "model_final.pth")
    demo = draw_demo(cfg, weights, REFEXP_VAL, out / "demo.png", args.demo_images)
    plot_curves(metrics_rows, evaluations, baselines, out / "training_curves.png")
    drawn = time.time()

    refexp = metrics[REFEXP_VAL]["refexp"]
    results = {
        "REC_P@1": refexp[P_AT_1],
        "REC_P@1_by_expression_type": by_expression_type(refexp),
        "phrase_grounding_R@1": metrics[FLICKR_VAL]["flickr"]["R@1_all"],
        "text_blind_baselines_P@1": baselines,
        # Detectron2's COCOEvaluator (percent): the five shapes detected with class prompts.
        "class_prompt_box_AP": {"per_class": metrics[DETECTION_VAL]["bbox"], "joined": joined_ap},
        "metrics": metrics,
        "validation_curve": [
            {"iteration": it, "REC_P@1": ev[REFEXP_VAL]["refexp"][P_AT_1],
             "phrase_grounding_R@1": ev[FLICKR_VAL]["flickr"]["R@1_all"]}
            for it, ev in evaluations],
        "demo": demo,
        "seconds": {"generate": round(generated - start, 1),
                    "train_and_evaluate": round(trained - generated, 1),
                    "class_prompts_joined_and_baselines": round(baselined - trained, 1),
                    "figures": round(drawn - baselined, 1),
                    "total": round(time.time() - start, 1)},
        "iterations": evaluations[-1][0],
        "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "processes": args.num_processes,
        "seed": cfg.SEED,
        "config": args.config_file,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if args.figures:
        figures = Path(args.figures)
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "training_curves.png", figures / "synthetic_training_curves.png")
        shutil.copy(out / "demo.png", figures / "synthetic_demo.png")
    logger.info("REC P@1 %.3f (by expression type %s), phrase grounding R@1 %.3f",
                results["REC_P@1"], json.dumps({k: round(v, 3) for k, v in
                                                results["REC_P@1_by_expression_type"].items()}),
                results["phrase_grounding_R@1"])
    logger.info("class-prompt box AP / AP50 (COCOEvaluator, %%): %s", json.dumps(
        {style: [round(r["AP"], 1), round(r["AP50"], 1)]
         for style, r in results["class_prompt_box_AP"].items()}))
    logger.info("text-blind baselines (P@1): %s",
                json.dumps({k: round(v["all"], 3) for k, v in baselines.items()}))
    logger.info("time (s): %s; wrote %s", json.dumps(results["seconds"]), out / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
