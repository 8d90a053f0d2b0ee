"""The README's main job (tools/synthetic_job.py) on a tiny world: the same code path, few iterations."""
import json

from mdetr_synthetic.language import EXPRESSION_TYPES

_job = __import__("tools.synthetic_job", fromlist=["main"]).main


def test_synthetic_job_end_to_end(tmp_path):
    """Generation, training and evaluation through tools/train_net.py (2 processes, an evaluation
    during training and one at the end), baselines, figures: every promised metric is written."""
    out = tmp_path / "out"
    rc = _job(["--data-root", str(tmp_path / "world"), "--num-train", "6", "--num-val", "3",
               "--output", str(out), "--figures", str(tmp_path / "figures"), "--demo-images", "2",
               "SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "2", "SOLVER.IMS_PER_BATCH", "2"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    val_types = {e["expression_type"] for e in json.loads(
        (tmp_path / "world" / "annotations" / "synthetic_refexp_val.json").read_text())["images"]}
    assert 0.0 <= results["REC_P@1"] <= 1.0 and 0.0 <= results["phrase_grounding_R@1"] <= 1.0
    assert set(results["REC_P@1_by_expression_type"]) == val_types
    assert val_types <= set(EXPRESSION_TYPES)
    refexp, flickr = results["metrics"]["synthetic_refexp_val"], results["metrics"]["synthetic_flickr_val"]
    assert {"refexp", "bbox"} <= set(refexp) and {"flickr", "bbox"} <= set(flickr)
    assert refexp["refexp"]["synthetic_refexp/P@1"] == results["REC_P@1"]
    # Class-prompt detection of the shapes, scored by Detectron2's COCOEvaluator, both styles.
    prompts_ap = results["class_prompt_box_AP"]
    assert set(prompts_ap) == {"per_class", "joined"}
    assert all(0.0 <= r["AP50"] <= 100.0 and "AP-circle" in r for r in prompts_ap.values())
    baselines = results["text_blind_baselines_P@1"]
    assert set(baselines) == {"largest object", "smallest object", "most central object", "random object"}
    assert all(set(b) == val_types | {"all"} and all(0.0 <= v <= 1.0 for v in b.values())
               for b in baselines.values())
    assert [row["iteration"] for row in results["validation_curve"]] == [2, 4]
    assert results["iterations"] == 4
    assert set(results["seconds"]) == {"generate", "train_and_evaluate",
                                       "class_prompts_joined_and_baselines", "figures", "total"}
    assert len(results["demo"]) == 2 and all(isinstance(d["correct"], bool) for d in results["demo"])
    assert "tools/train_net.py" in (out / "synthetic_job.log").read_text()
    assert "Evaluation results for synthetic_refexp_val" in (out / "log.txt").read_text()
    for name in ("synthetic_demo.png", "synthetic_training_curves.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0


def test_train_net_eval_only_runs_the_registered_evaluators(tmp_path):
    """`tools/train_net.py --eval-only` on a registered split: the right evaluators, end to end."""
    from detectron2.engine import default_argument_parser

    world, out = tmp_path / "world", tmp_path / "out"
    assert _job(["--data-root", str(world), "--num-train", "4", "--num-val", "2", "--output", str(out),
                 "--demo-images", "1", "--num-processes", "1", "SOLVER.MAX_ITER", "1",
                 "SOLVER.IMS_PER_BATCH", "2"]) == 0
    train_net = __import__("tools.train_net", fromlist=["main"])
    args = default_argument_parser().parse_args([
        "--config-file", "configs/synthetic/mdetr_synthetic.yaml", "--eval-only",
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
        "MODEL.MDETR.TEXT_ENCODER.NAME", str(world / "text_encoder"),
        "DATASETS.TEST", "('synthetic_refexp_val', 'synthetic_flickr_val')",
    ])
    results = train_net.main(args)
    assert "synthetic_refexp/P@1" in results["synthetic_refexp_val"]["refexp"]
    assert "R@1_all" in results["synthetic_flickr_val"]["flickr"]
    assert "AP50" in results["synthetic_refexp_val"]["bbox"]


def test_training_curves_use_only_the_latest_run_of_an_appended_metrics_file():
    """Detectron2 appends every run in an output folder to metrics.json; the plot once drew both runs."""
    from tools.synthetic_job import last_run_rows

    first = [{"iteration": i, "total_loss": 10.0 - i} for i in (19, 39, 59)]
    evaluation = {"iteration": 59, "synthetic_refexp/P@1": 0.2}
    second = [{"iteration": i, "total_loss": 5.0 - i / 100} for i in (19, 39)]
    assert last_run_rows(first + [evaluation] + second) == second
    assert last_run_rows(first) == first
    assert last_run_rows([evaluation]) == []
