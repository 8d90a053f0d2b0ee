"""Every recipe in configs/ runs end to end as published, on a miniature of its data.

One generator (``mdetr_synthetic.recipes``) writes every family's data in its real on-disk
layout under a temporary datasets root; each recipe then runs through ``tools/train_net.py
--config-file <recipe>`` with only size overrides (tiny backbone, transformer and text encoder, one
epoch of a few iterations, CPU): it trains, evaluates at the end, and ``--eval-only`` on its final
checkpoint reproduces that evaluation. Recipes that start from another recipe's output
(``MODEL.WEIGHTS output/<recipe>/model_final.pth``, or the pre-trained checkpoint) run after it, in
the same working folder, as a user would chain them. One recipe per family goes through the real
command line (a subprocess, metrics read from its log.txt); the others call train_net's ``main``.

The oracle checks feed each example's ground truth, as the recipe's mapper delivers it, back as the
prediction (a stand-in meta-architecture) through the recipe's evaluators: every metric family
reaches its perfect score, which proves the plumbing (answers, ids, spans, masks, protocols), not
just the arithmetic.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn

from mdetr_d2.data import MDETR_DATASET_NAMES
from mdetr_d2.structures import CLEVR_ATTRIBUTES, GQA_ANSWER_TYPES

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRETRAINED = "checkpoints/pretrained_resnet101_checkpoint.pth"

# Size overrides only: a narrow ResNet (or EfficientNet-B0), a 1+2-layer 128-wide transformer, the
# miniature's local text encoder, small images, 2 images per batch, one epoch, CPU.
TINY = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.STEM_OUT_CHANNELS", "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "8", "MODEL.MDETR.EFFICIENTNET_VARIANT", "b0",
    "MODEL.MDETR.BACKBONE_PRETRAINED", "False",
    "MODEL.MDETR.HIDDEN_DIM", "128", "MODEL.MDETR.NHEADS", "8", "MODEL.MDETR.ENC_LAYERS", "1",
    "MODEL.MDETR.DEC_LAYERS", "2", "MODEL.MDETR.DIM_FEEDFORWARD", "64",
    "MODEL.MDETR.NUM_QUERIES", "6", "MODEL.MDETR.CONTRASTIVE_HDIM", "16",
    "INPUT.MDETR.SCALES", "[64, 80]", "INPUT.MDETR.MAX_SIZE", "128",
    "INPUT.MDETR.PRE_CROP_SCALES", "[64, 80]", "INPUT.MDETR.CROP_SIZE", "[48, 96]",
    "INPUT.MDETR.TEST_SIZE", "64", "INPUT.MDETR.TEST_MAX_SIZE", "128",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.EPOCHS", "1", "DATALOADER.NUM_WORKERS", "0",
]
SCRATCH_RESNET = ["MODEL.BACKBONE.NAME", "build_mdetr_scratch_resnet_backbone"]


@dataclass(frozen=True)
class Recipe:
    """A config of configs/ and what its evaluation must report: {dataset: {task: keys}}."""

    name: str
    expected: dict
    cli: bool = False  # the family's run through the real command line
    extra: tuple = ()  # further size overrides

    @property
    def config(self) -> Path:
        return CONFIGS / f"{self.name}.yaml"


BOX_AP = ("AP", "AP50", "AP75")
COCO_AREA_AP = ("APs", "APm", "APl")
PRETRAIN_EXPECTED = {
    "gqa_det_val": {"bbox": BOX_AP},
    "flickr_separate_val": {"flickr": ("R@1_all", "R@5_all", "R@10_all", "any_box/R@1_all",
                                       "merged_box/R@1_all"), "bbox": BOX_AP},
    "refexp_pretrain_val": {"refexp": ("refcoco/P@1", "refcoco+/P@1", "refcocog/P@1",
                                       "refcoco/P@1_IoU"), "bbox": BOX_AP},
}
# Class prompts over the category names: fixed AP (every detection) and Detectron2's standard AP.
LVIS_EXPECTED = {"lvis_v1_minival": {"lvis_fixed_ap": ("AP", "AP50", "APr", "APc", "APf"),
                                     "bbox": ("AP", "AP50", "APr", "APc", "APf")}}
RECIPES = [
    Recipe("pretrain/mdetr_pretrain_r101", PRETRAIN_EXPECTED, cli=True),
    Recipe("pretrain/mdetr_pretrain_eb3", PRETRAIN_EXPECTED),
    Recipe("pretrain/mdetr_pretrain_eb5", PRETRAIN_EXPECTED),
    Recipe("mdetr_refcoco", {"refcoco_val": {
        "refexp": ("refcoco/P@1", "refcoco/P@5", "refcoco/P@10"), "bbox": BOX_AP}}, cli=True),
    Recipe("mdetr_refcoco+", {"refcoco+_val": {"refexp": ("refcoco+/P@1",), "bbox": BOX_AP}}),
    Recipe("mdetr_refcocog", {"refcocog_val": {"refexp": ("refcocog/P@1",), "bbox": BOX_AP}}),
    Recipe("mdetr_flickr_merged", {"flickr_merged_val": {
        "flickr": ("R@1_all", "merged_box/R@1_all", "any_box/R@1_all"), "bbox": BOX_AP}}, cli=True),
    Recipe("mdetr_phrasecut_step1", {"phrasecut_miniv": {
        "phrasecut": ("box/mIoU", "box/Pr@0.5", "box/Pr@0.9"), "bbox": BOX_AP}}),
    Recipe("mdetr_phrasecut_step2", {"phrasecut_miniv": {
        "phrasecut": ("box/mIoU", "mask/mIoU", "mask/cIoU", "mask/Pr@0.5"), "bbox": BOX_AP,
        "segm": BOX_AP}}, cli=True),
    # 25 chunks of a 12-question miniature would be empty: 2 chunks keep the chunk arithmetic.
    Recipe("mdetr_gqa", {"gqa_testdev_balanced": {"gqa": ("accuracy", "accuracy_answer_type"),
                                                  "bbox": BOX_AP}},
           cli=True, extra=("SOLVER.EPOCH_CHUNKS", "2")),
    Recipe("mdetr_clevr_step1", {"clevr_medium_val": {"bbox": BOX_AP}}, cli=True),
    Recipe("mdetr_clevr_step2", {"clevr_full_val": {"clevr": ("accuracy", "accuracy_answer_type"),
                                                    "bbox": BOX_AP}}),
    Recipe("mdetr_clevr_humans", {"clevr_humans_val": {"clevr": ("accuracy",)}}),
    Recipe("mdetr_clevr_cogent_step1", {"clevr_cogent_medium_valA": {"bbox": BOX_AP}}),
    Recipe("mdetr_clevr_cogent", {"clevr_cogent_full_valA": {"clevr": ("accuracy",),
                                                             "bbox": BOX_AP}}),
    Recipe("mdetr_clevr_ref", {"clevrref_val": {"clevrref": ("clevrref/P@1", "clevrref/P@5"),
                                                "bbox": BOX_AP}}, cli=True),
    Recipe("mdetr_lvis1", LVIS_EXPECTED),
    Recipe("mdetr_lvis10", LVIS_EXPECTED, cli=True),
    Recipe("mdetr_lvis100", LVIS_EXPECTED),
    # The embedded default states its schedule in iterations: explicit keys still work.
    Recipe("synthetic/mdetr_synthetic", {
        "synthetic_refexp_val": {"refexp": ("synthetic_refexp/P@1",), "bbox": BOX_AP},
        "synthetic_flickr_val": {"flickr": ("R@1_all",), "bbox": BOX_AP},
        "synthetic_detection_val": {"bbox": BOX_AP}},
        cli=True, extra=("SOLVER.MAX_ITER", "3", "SOLVER.LR_DROP", "2",
                         "SOLVER.CHECKPOINT_PERIOD", "3")),
]
BY_NAME = {r.name: r for r in RECIPES}


def _load_cfg(recipe: Recipe, opts=()):
    from detectron2.config import get_cfg

    from mdetr_d2.config import add_mdetr_config

    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(str(recipe.config))
    cfg.merge_from_list(list(opts))
    return cfg


def _overrides(recipe: Recipe, text_encoder: str) -> list[str]:
    cfg = _load_cfg(recipe)
    backbone = SCRATCH_RESNET if cfg.MODEL.BACKBONE.NAME == "build_mdetr_resnet_backbone" else []
    return TINY + backbone + ["MODEL.MDETR.TEXT_ENCODER.NAME", text_encoder, *recipe.extra]


def _parse_copypaste(log: str) -> dict:
    """The evaluation tables train_net printed ("copypaste" lines), last evaluation of each set."""
    results: dict = {}
    dataset = task = None
    keys = None
    for line in log.splitlines():
        m = re.search(r"Evaluation results for (\S+) in csv format:", line)
        if m:
            dataset, task, keys = m.group(1), None, None
            results[dataset] = {}
            continue
        m = re.search(r"copypaste: (.*)$", line)
        if not m or dataset is None:
            continue
        text = m.group(1)
        if text.startswith("Task: "):
            task, keys = text[len("Task: "):], None
        elif keys is None:
            keys = text.split(",")
        else:
            results[dataset][task] = dict(zip(keys, (float(v) for v in text.split(","))))
    return results


def _by_dataset(cfg_datasets, results) -> dict:
    # DefaultTrainer.test returns a single test set's results without the dataset level.
    return {cfg_datasets[0]: results} if len(cfg_datasets) == 1 else dict(results)


def _check_metrics(recipe: Recipe, results: dict) -> None:
    assert set(results) == set(recipe.expected), (recipe.name, set(results))
    for dataset, tasks in recipe.expected.items():
        reported = results[dataset]
        assert set(reported) == set(tasks), (recipe.name, dataset, sorted(reported))
        for task, keys in tasks.items():
            values = reported[task]
            missing = [k for k in keys if k not in values]
            assert not missing, (recipe.name, dataset, task, missing, sorted(values))
            # Detectron2's COCOEvaluator reports NaN for a slice without ground truth (an area
            # range: the synthetic shapes are never COCO-"large"; a category absent from a
            # miniature); any other non-finite value is a failure.
            bad = {k: v for k, v in values.items() if not math.isfinite(v)
                   and not (math.isnan(v) and (k in COCO_AREA_AP or k.startswith("AP-")))}
            assert not bad, (recipe.name, dataset, task, bad)


@contextlib.contextmanager
def _in_folder_with_own_log_handlers(folder: Path):
    """cwd = ``folder``; the log handlers a train_net run adds are closed afterwards (each
    in-process run would otherwise keep writing into every earlier run's log.txt)."""
    names = ("detectron2", "d2", "fvcore", "mdetr_d2")
    before = {n: list(logging.getLogger(n).handlers) for n in names}
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)
        for n in names:
            for handler in logging.getLogger(n).handlers[:]:
                if handler not in before[n]:
                    logging.getLogger(n).removeHandler(handler)
                    handler.close()


def _register_relative_datasets() -> None:
    """The built-in registrations must point at ``./datasets`` (relative: the working folder)."""
    if MetadataCatalog.get("refcoco_train").json_file.startswith("datasets"):
        return
    from mdetr_d2.data.datasets.builtin import register_all

    for name in MDETR_DATASET_NAMES:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    del MDETR_DATASET_NAMES[:]
    register_all("datasets")


class RecipeRunner:
    """Runs recipes in one working folder (``datasets/``, ``checkpoints/``, ``output/``), each
    after the recipe whose output its MODEL.WEIGHTS names."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.text_encoder = str(workdir / "datasets" / "synthetic" / "text_encoder")
        self.trained: dict[str, dict] = {}

    def prerequisite(self, recipe: Recipe) -> Recipe | None:
        weights = _load_cfg(recipe).MODEL.WEIGHTS
        if weights == PRETRAINED:
            return BY_NAME["pretrain/mdetr_pretrain_r101"]
        for other in RECIPES:
            if weights and weights == os.path.join(_load_cfg(other).OUTPUT_DIR, "model_final.pth"):
                return other
        assert not weights, f"{recipe.name}: MODEL.WEIGHTS {weights} comes from no recipe"
        return None

    def args(self, recipe: Recipe, *extra: str) -> list[str]:
        return ["--config-file", str(recipe.config), *_overrides(recipe, self.text_encoder), *extra]

    def main(self, argv: list[str]):
        train_net = __import__("tools.train_net", fromlist=["main"])
        _register_relative_datasets()
        with _in_folder_with_own_log_handlers(self.workdir):
            from mdetr_synthetic import register_synthetic

            register_synthetic(Path("datasets/synthetic"))  # other tests may have re-pointed it
            return train_net.main(default_argument_parser().parse_args(argv))

    def cli(self, argv: list[str]) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
                   MDETR_DATASETS="datasets")
        return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *argv],
                              cwd=self.workdir, env=env, capture_output=True, text=True)

    def train(self, recipe: Recipe) -> dict:
        """Train ``recipe`` (once) and return its final evaluation, by dataset."""
        if recipe.name in self.trained:
            return self.trained[recipe.name]
        before = self.prerequisite(recipe)
        if before is not None:
            self.train(before)
        cfg = _load_cfg(recipe)
        if recipe.cli:
            proc = self.cli(self.args(recipe))
            assert proc.returncode == 0, f"{recipe.name}:\n{proc.stderr[-3000:]}"
            log = (self.workdir / cfg.OUTPUT_DIR / "log.txt").read_text()
            results = _parse_copypaste(log)
        else:
            results = _by_dataset(cfg.DATASETS.TEST, self.main(self.args(recipe)))
        final = self.workdir / cfg.OUTPUT_DIR / "model_final.pth"
        assert final.is_file(), f"{recipe.name}: no {final}"
        if recipe.name == "pretrain/mdetr_pretrain_r101":
            link = self.workdir / PRETRAINED
            link.parent.mkdir(exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(final)
        self.trained[recipe.name] = results
        return results

    def eval_only(self, recipe: Recipe, *extra: str) -> dict:
        cfg = _load_cfg(recipe, extra)
        argv = self.args(recipe, "MODEL.WEIGHTS", os.path.join(cfg.OUTPUT_DIR, "model_final.pth"),
                         "OUTPUT_DIR", os.path.join(cfg.OUTPUT_DIR, "eval_only"), *extra)
        return _by_dataset(cfg.DATASETS.TEST, self.main(["--eval-only", *argv]))


@pytest.fixture(scope="session")
def runner(tmp_path_factory) -> RecipeRunner:
    from mdetr_synthetic import write_recipe_datasets

    workdir = tmp_path_factory.mktemp("recipes")
    write_recipe_datasets(workdir / "datasets", seed=0, images_per_split=3)
    return RecipeRunner(workdir)


@pytest.mark.parametrize("recipe", [pytest.param(r, id=r.name) for r in RECIPES])
def test_recipe_trains_evaluates_and_reevaluates(runner, recipe):
    trained = runner.train(recipe)
    _check_metrics(recipe, trained)
    # --eval-only on the final checkpoint: the same weights (EMA when the recipe has EMA), the
    # same metrics as the evaluation that ended training.
    again = runner.eval_only(recipe)
    _check_metrics(recipe, again)
    for dataset, tasks in recipe.expected.items():
        for task in tasks:
            first, second = trained[dataset][task], again[dataset][task]
            common = sorted(set(first) & set(second))  # the printed tables omit keys with "-"
            assert len(common) >= len(tasks[task])
            assert [second[k] for k in common] == pytest.approx(
                [first[k] for k in common], abs=1e-4, nan_ok=True), (recipe.name, dataset, task)


def test_cogent_model_answers_condition_b_questions(runner):
    """The CoGenT recipe's other test set (its comment): the original CLEVR question file of
    condition B, questions without boxes; evaluating it used to fail (KeyError 'categories')."""
    recipe = BY_NAME["mdetr_clevr_cogent"]
    runner.train(recipe)
    results = runner.eval_only(recipe, "DATASETS.TEST", "('clevr_cogent_questions_valB',)")
    assert set(results["clevr_cogent_questions_valB"]) == {"clevr"}
    assert 0.0 <= results["clevr_cogent_questions_valB"]["clevr"]["accuracy"] <= 1.0


# --------------------------------------------------------------------------------------------------
# Oracle: the ground truth as prediction, through the recipe's mapper and evaluators
# --------------------------------------------------------------------------------------------------
@META_ARCH_REGISTRY.register()
class GroundTruthOracle(nn.Module):
    """Predicts, for every input, exactly what the mapper says is there: its boxes (score 1, in
    original pixels), their tokens, classes, is-final flags and masks, and its answer (decoded
    from the mapper's encoded QA targets the way the real model's heads output them)."""

    def __init__(self, cfg):
        super().__init__()
        self.qa_head = cfg.MODEL.MDETR.QA_HEAD
        self.register_buffer("device_anchor", torch.zeros(1), persistent=False)

    def forward(self, batched_inputs):
        assert not self.training
        return [self.predict(x) for x in batched_inputs]

    def predict(self, x: dict) -> dict:
        height, width = x["height"], x["width"]
        gt = x["instances"]
        h, w = gt.image_size
        boxes = gt.gt_boxes.tensor.clone()
        boxes[:, 0::2] *= width / w
        boxes[:, 1::2] *= height / h
        out = Instances((height, width))
        out.pred_boxes = Boxes(boxes)
        out.scores = torch.ones(len(boxes))
        out.pred_classes = gt.gt_classes
        if gt.has("gt_positive_map"):
            pmap = gt.gt_positive_map.float()
            out.token_probs = pmap / pmap.sum(1, keepdim=True).clamp(min=1)
        if gt.has("gt_isfinal"):
            out.scores_refexp = gt.gt_isfinal.float()
        if gt.has("gt_masks"):
            assert (h, w) == (height, width), "masks: evaluate the oracle at the native size"
            out.pred_masks = gt.gt_masks.tensor
        result = {"instances": out}
        if "answers" in x:
            result["qa"] = self.answer(x["answers"])
        return result

    def answer(self, answers: dict) -> dict:
        """The answer as the QA heads report it: a class id for GQA (no vocabulary in the model),
        the CLEVR answer text for CLEVR."""
        if self.qa_head == "clevr":
            kind = ("binary", "attribute", "number")[int(answers["answer_type"])]
            if kind == "binary":
                text = "yes" if float(answers["answer_binary"]) > 0.5 else "no"
            elif kind == "attribute":
                text = CLEVR_ATTRIBUTES[int(answers["answer_attr"])]
            else:
                text = str(int(answers["answer_reg"]))
            return {"answer": text, "answer_type": kind, "confidence": 1.0}
        kind = GQA_ANSWER_TYPES[int(answers["answer_type"])]
        return {"answer": int(answers[f"answer_{kind}"]), "answer_type": kind, "confidence": 1.0}


ORACLE_OPTS = ("MODEL.META_ARCHITECTURE", "GroundTruthOracle", "MODEL.WEIGHTS", "",
               "INPUT.MDETR.TEST_SIZE", "0")
# recipe -> {dataset: {task: {metric: perfect score}}}
ORACLE = {
    "pretrain/mdetr_pretrain_r101": {
        "gqa_det_val": {"bbox": {"AP": 1.0}},
        "flickr_separate_val": {"flickr": {"R@1_all": 1.0, "any_box/R@1_all": 1.0}},
        "refexp_pretrain_val": {"refexp": {"refcoco/P@1": 1.0, "refcoco+/P@1": 1.0,
                                           "refcocog/P@1": 1.0}},
    },
    "mdetr_refcoco": {"refcoco_val": {"refexp": {"refcoco/P@1": 1.0, "refcoco/P@1_IoU": 1.0},
                                      "bbox": {"AP": 1.0}}},
    "mdetr_flickr_merged": {"flickr_merged_val": {"flickr": {"R@1_all": 1.0,
                                                             "merged_box/R@1_all": 1.0}}},
    "mdetr_phrasecut_step2": {"phrasecut_miniv": {
        "phrasecut": {"box/mIoU": 1.0, "mask/mIoU": 1.0, "mask/cIoU": 1.0, "mask/Pr@0.9": 1.0},
        "segm": {"AP": 1.0}}},
    "mdetr_gqa": {"gqa_testdev_balanced": {"gqa": {"accuracy": 1.0, "accuracy_answer_type": 1.0}}},
    "mdetr_clevr_step2": {"clevr_full_val": {"clevr": {"accuracy": 1.0,
                                                       "accuracy_answer_type": 1.0}}},
    "mdetr_clevr_humans": {"clevr_humans_val": {"clevr": {"accuracy": 1.0}}},
    "mdetr_clevr_ref": {"clevrref_val": {"clevrref": {"clevrref/P@1": 1.0}}},
    "mdetr_lvis10": {"lvis_v1_minival": {"lvis_fixed_ap": {"AP": 1.0}}},
}


@pytest.mark.parametrize("name", list(ORACLE))
def test_ground_truth_as_prediction_scores_perfectly(runner, name):
    recipe = BY_NAME[name]
    results = _by_dataset(_load_cfg(recipe).DATASETS.TEST,
                          runner.main(["--eval-only", *runner.args(recipe, *ORACLE_OPTS)]))
    for dataset, tasks in ORACLE[name].items():
        for task, perfect in tasks.items():
            got = {k: results[dataset][task][k] for k in perfect}
            assert got == pytest.approx(perfect, abs=1e-9), (name, dataset, task, got)


def test_train_net_log_has_mdetr_d2_lines(runner):
    """log.txt of a real command-line run carries the package's own lines: schedule, weights loaded
    (and whether EMA), dataset counts, evaluator tables."""
    runner.train(BY_NAME["mdetr_refcoco"])  # a command-line run
    log = (runner.workdir / "output" / "mdetr_refcoco" / "log.txt").read_text()
    for pattern in [
        r"mdetr_d2\.engine\.trainer INFO: Training set refcoco_train: 6 datapoints",
        r"mdetr_d2\.engine\.trainer INFO: Schedule: D = 6 training datapoints, 1 process\(es\) x 2 "
        r"images: 3 iterations per epoch",
        r"SOLVER\.MAX_ITER = 3 \(1 epochs\)",
        r"mdetr_d2\.checkpoint\.checkpointer INFO: Loading the EMA weights of "
        r"checkpoints/pretrained_resnet101_checkpoint\.pth \(model_ema\)",
        r"mdetr_d2\.data\.datasets\.mdetr_json INFO: Loaded 6 image-caption records of refcoco_val",
        r"mdetr_d2\.evaluation\.common INFO: refcoco_val: precision@k",
        r"\| refcoco +\| [0-9.]+ +\|",
    ]:
        assert re.search(pattern, log), pattern


def test_register_check_reports_missing_evaluation_inputs(runner, capsys):
    """`datasets/register.py --check` checks what the evaluators read, not only json and images."""
    import importlib.util

    from mdetr_d2.data import register_mdetr_json

    path = REPO / "datasets" / "register.py"
    spec = importlib.util.spec_from_file_location("register_tool", path)
    register_tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(register_tool)
    _register_relative_datasets()
    names = ["flickr_separate_val", "phrasecut_miniv", "gqa_testdev_balanced", "lvis_v1_minival"]
    with _in_folder_with_own_log_handlers(runner.workdir):
        register_tool.main(["--check", "--only", *names])
        present = capsys.readouterr().out
        assert all(f"[present] {n}" in present for n in names), present
        # A Flickr-format dataset whose Entities folder is not there: trainable, not evaluable.
        register_mdetr_json(
            "my_flickr_val", "datasets/mdetr_annotations/final_flickr_separateGT_val.json",
            "datasets/flickr30k/images/val", evaluator_type="flickr", flickr_split="val",
            flickr_gt_type="separate", flickr_entities_dir="datasets/my_flickr_entities")
        register_tool.main(["--check", "--only", "my_flickr_val"])
    report = capsys.readouterr().out
    assert "[NO-EVAL] my_flickr_val" in report, report
    assert "Flickr30k Entities: val.txt (datasets/my_flickr_entities/val.txt)" in report
