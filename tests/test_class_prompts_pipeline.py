"""Class prompts the way users reach them: DefaultPredictor, tools/train_net.py --eval-only with
Detectron2's COCOEvaluator on a register_coco_instances dataset, and the LVIS recipe's evaluation
path on an lvis_v1_minival with non-contiguous category ids (its fixed AP against the lvis package).
The LVIS recipes themselves run through tools/train_net.py in tests/test_recipe_matrix.py."""
import contextlib
import io
import math

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from detectron2.engine import DefaultPredictor, default_argument_parser
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from mdetr_d2 import add_mdetr_config
from mdetr_d2.data.datasets.mdetr_json import (
    MDETR_DATASET_NAMES,
    load_lvis_v1_json,
    register_mdetr_dataset,
)
from mdetr_synthetic import generate_synthetic_dataset, register_synthetic
from mdetr_synthetic.scenes import SHAPES
from mdetr_d2.engine import MDETRTrainer
from mdetr_d2.evaluation import build_mdetr_evaluators
from mdetr_d2.predictor import MDETRPredictor

from .conftest import tiny_mdetr_cfg
from .tiny_lvis import CATEGORIES, write_tiny_lvis

_train_net = __import__("tools.train_net", fromlist=["main"])
NAMES = ["cat", "dog", "red shirt"]
# The tiny model of conftest.tiny_mdetr_cfg, as command-line overrides of a recipe.
TINY = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18", "MODEL.MDETR.HIDDEN_DIM", "64",
        "MODEL.MDETR.NHEADS", "4", "MODEL.MDETR.ENC_LAYERS", "1", "MODEL.MDETR.DEC_LAYERS", "2",
        "MODEL.MDETR.DIM_FEEDFORWARD", "64", "MODEL.MDETR.NUM_QUERIES", "5",
        "MODEL.MDETR.CONTRASTIVE_HDIM", "16", "INPUT.MDETR.TEST_SIZE", "64",
        "INPUT.MDETR.TEST_MAX_SIZE", "96", "DATALOADER.NUM_WORKERS", "0"]


def _cfg(config_file: str, opts: list[str]):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg


def _save_weights(cfg, folder) -> str:
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model_final")
    return str(folder / "model_final.pth")


def _bgr(h=50, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3)).astype(np.uint8)


def test_default_predictor_detects_classes_or_grounds_a_caption(tiny_text_encoder, tmp_path):
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{
        "MODEL.MDETR.CLASS_PROMPTS.NAMES": NAMES, "TEST.DETECTIONS_PER_IMAGE": 4,
        "INPUT.MIN_SIZE_TEST": 64, "INPUT.MAX_SIZE_TEST": 96})
    cfg.MODEL.WEIGHTS = _save_weights(cfg, tmp_path)
    out = DefaultPredictor(cfg)(_bgr())
    inst = out["instances"]
    assert inst.image_size == (50, 70) and len(inst) == 4 and len(out["all_instances"]) == 3 * 5
    assert set(inst.pred_classes.tolist()) <= {0, 1, 2}
    assert list(inst.pred_phrases) == [NAMES[c] for c in inst.pred_classes.tolist()]
    visualizer = Visualizer(_bgr()[:, :, ::-1], Metadata(thing_classes=NAMES))
    assert visualizer.draw_instance_predictions(inst).get_image().shape == (50, 70, 3)
    # MDETRPredictor: classes= (its own resize: MDETR's evaluation transform).
    ours = MDETRPredictor(cfg)(_bgr(), classes=NAMES)["instances"]
    assert len(ours) == 4 and set(ours.pred_classes.tolist()) <= {0, 1, 2}

    # No class list in the config: DATASETS.TEST[0]'s thing_classes (Detectron2's builtin COCO).
    coco = cfg.clone()
    coco.MODEL.MDETR.CLASS_PROMPTS.NAMES = []
    coco.DATASETS.TEST = ("coco_2017_val",)
    inst = DefaultPredictor(coco)(_bgr())["instances"]
    names = MetadataCatalog.get("coco_2017_val").thing_classes
    assert len(names) == 80
    assert list(inst.pred_phrases) == [names[c] for c in inst.pred_classes.tolist()]

    captioned = coco.clone()
    captioned.DATASETS.TEST = ()
    captioned.MODEL.MDETR.DEFAULT_CAPTION = "the cat on the left"
    out = DefaultPredictor(captioned)(_bgr())
    assert "all_instances" not in out and len(out["instances"]) == 5
    assert all(p in "the cat on the left" for p in out["instances"].pred_phrases)

    captioned.MODEL.MDETR.DEFAULT_CAPTION = ""
    with pytest.raises(ValueError, match="MODEL.MDETR.DEFAULT_CAPTION.*MODEL.MDETR.CLASS_PROMPTS"):
        DefaultPredictor(captioned)(_bgr())


def _eval_only(config_file, opts):
    args = ["--config-file", config_file, "--eval-only", *opts]
    return _train_net.main(default_argument_parser().parse_args(args))


def test_train_net_scores_a_coco_format_dataset_with_detectron2_coco_evaluator(tmp_path):
    world = tmp_path / "world"
    generate_synthetic_dataset(world, num_train=2, num_val=3, num_test=1, progress=False)
    register_synthetic(world)
    config = "configs/synthetic/mdetr_synthetic.yaml"
    opts = ["MODEL.MDETR.TEXT_ENCODER.NAME", str(world / "text_encoder"),
            "OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.TEST", "('synthetic_detection_val',)"]
    opts += ["MODEL.WEIGHTS", _save_weights(_cfg(config, opts), tmp_path)]
    for style in ("per_class", "joined"):
        results = _eval_only(config, opts + ["MODEL.MDETR.CLASS_PROMPTS.STYLE", style])
        bbox = results["bbox"]  # COCOEvaluator's table, one entry per shape too
        assert {"AP", "AP50", "AP75"} <= set(bbox) and {f"AP-{s}" for s in SHAPES} <= set(bbox)
        assert all(math.isfinite(bbox[k]) for k in ("AP", "AP50", "AP75"))
    assert MetadataCatalog.get("synthetic_detection_val").thing_classes == list(SHAPES)


@pytest.fixture()
def tiny_minival(tmp_path):
    """An LVIS v1 minival miniature registered as ``lvis_v1_minival`` is (same loader and metadata),
    under its own name: ids 3, 7, 12, 20, 41 and names with parentheses and underscores."""
    root = tmp_path / "datasets"
    json_file = write_tiny_lvis(root)
    name = f"test_lvis_minival_{tmp_path.name}"
    register_mdetr_dataset(name, load_lvis_v1_json, str(json_file), str(root / "coco"),
                           evaluator_type="lvis", lvis_json=str(json_file))
    yield name, json_file
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    MDETR_DATASET_NAMES.remove(name)


LVIS_RECIPE = "configs/mdetr_lvis10.yaml"


def _lvis_opts(tiny_text_encoder, tmp_path):
    return TINY + ["MODEL.MDETR.TEXT_ENCODER.NAME", tiny_text_encoder,
                   "OUTPUT_DIR", str(tmp_path / "out"), "TEST.MDETR_EVAL.LVIS_TOPK", "6"]


class _Recorder(DatasetEvaluator):
    def reset(self):
        self.detections = []

    def process(self, inputs, outputs):
        for x, out in zip(inputs, outputs):
            self.detections.append((x["image_id"], out["all_instances"].to("cpu")))

    def evaluate(self):
        return {}


def test_fixed_ap_equals_the_lvis_package(tiny_text_encoder, tiny_minival, tmp_path):
    """The recipe's evaluation path (loader, class prompts from the json, contiguous ids), then the
    same detections scored directly with the lvis package: per category the top k, no cap."""
    from lvis import LVIS, LVISEval, LVISResults

    from mdetr_d2.evaluation.lvis_fixed_ap import _numpy_float_alias

    name, json_file = tiny_minival
    cfg = _cfg(LVIS_RECIPE, _lvis_opts(tiny_text_encoder, tmp_path) + ["DATASETS.TEST", f"('{name}',)"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    loader = MDETRTrainer.build_test_loader(cfg, name)
    recorder = _Recorder()
    evaluators = build_mdetr_evaluators(cfg, name)
    results = inference_on_dataset(model, loader, DatasetEvaluators([evaluators, recorder]))

    ids = [c["id"] for c in CATEGORIES]  # contiguous id i = i-th category by id
    per_category = {}
    for image_id, inst in recorder.detections:
        assert len(inst) == len(CATEGORIES) * 5  # every (class, query): no per-image cap
        for box, score, cls in zip(inst.pred_boxes.tensor.tolist(), inst.scores.tolist(),
                                   inst.pred_classes.tolist()):
            x0, y0, x1, y1 = box
            per_category.setdefault(ids[cls], []).append({
                "image_id": image_id, "category_id": ids[cls], "score": score,
                "bbox": [x0, y0, x1 - x0, y1 - y0]})
    detections = []
    for dets in per_category.values():
        detections += sorted(dets, key=lambda d: -d["score"])[:6]
    with contextlib.redirect_stdout(io.StringIO()), _numpy_float_alias():
        gt = LVIS(str(json_file))
        reference = LVISEval(gt, LVISResults(gt, detections, max_dets=-1), "bbox")
        reference.params.max_dets = -1  # as the official evaluation (scripts/eval_lvis.py)
        reference.run()
    expected = {k: float(v) for k, v in reference.get_results().items()}
    got = results["lvis_fixed_ap"]
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], abs=1e-6, nan_ok=True), k
