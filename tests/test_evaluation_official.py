"""The evaluators reproduce every metric of the official MDETR evaluators on the parity fixtures
(``mdetr_official/evaluators``, see its README "Evaluators")."""
import json

import pytest
import torch
from detectron2.structures import Boxes, Instances

from mdetr_d2.evaluation import (
    ClevrRefEvaluator,
    FlickrEntitiesGroundTruth,
    FlickrEvaluator,
    PhraseCutEvaluator,
    PhraseCutGroundTruth,
    RefExpEvaluator,
)
from mdetr_d2.evaluation.refexp import refexp_ground_truth
from mdetr_d2.evaluation.phrasecut import phrasecut_task_stats

TOL = 1e-6


def refexp_inputs_outputs(preds):
    """Official ``{image_id: {"scores", "boxes"[, "scores_refexp"]}}`` → D2 inputs/outputs."""
    inputs, outputs = [], []
    for img_id, p in preds.items():
        inst = Instances((480, 640))
        inst.pred_boxes = Boxes(p["boxes"])
        inst.scores = p["scores"]
        if "scores_refexp" in p:
            inst.scores_refexp = p["scores_refexp"]
        inputs.append({"image_id": img_id, "height": 480, "width": 640})
        outputs.append({"instances": inst})
    return inputs, outputs


def run(evaluator, inputs, outputs, batch=3):
    evaluator.reset()
    for i in range(0, len(inputs), batch):
        evaluator.process(inputs[i : i + batch], outputs[i : i + batch])
    return evaluator.evaluate()


def test_refexp_matches_official(official_fixtures):
    d = official_fixtures / "evaluators" / "refexp"
    preds = torch.load(d / "refexp_predictions.pt", weights_only=True)["predictions"]
    official = json.loads((d / "refexp_metrics.json").read_text())["results_P@[1,5,10]"]
    ev = RefExpEvaluator("fixture_refexp", ground_truth=refexp_ground_truth(d / "refexp_gt.json"))
    res = run(ev, *refexp_inputs_outputs(preds))["refexp"]
    for name, values in official.items():
        for k, v in zip((1, 5, 10), values):
            assert res[f"{name}/P@{k}"] == pytest.approx(v, abs=TOL), (name, k)
    # The IoU variant is reported beside it: the two "iou_not_giou" datapoints are hits only there.
    assert res["refcoco/P@1_IoU"] > res["refcoco/P@1"]


def test_clevrref_matches_official(official_fixtures):
    d = official_fixtures / "evaluators" / "refexp"
    preds = torch.load(d / "clevrref_predictions.pt", weights_only=True)["predictions"]
    official = json.loads((d / "clevrref_metrics.json").read_text())["results_P@[1,5,10]"]["clevrref"]
    ev = ClevrRefEvaluator("fixture_clevrref", ground_truth=refexp_ground_truth(d / "clevrref_gt.json"))
    res = run(ev, *refexp_inputs_outputs(preds))["clevrref"]
    assert [res[f"clevrref/P@{k}"] for k in (1, 5, 10)] == pytest.approx(official, abs=TOL)


def _flickr_evaluator(official_fixtures):
    d = official_fixtures / "evaluators" / "flickr"
    gt = FlickrEntitiesGroundTruth(d / "flickr30k_entities", "val")
    return d, FlickrEvaluator("fixture_flickr", protocol="any_box", ground_truth=gt)


def test_flickr_matches_official(official_fixtures):
    d, ev = _flickr_evaluator(official_fixtures)
    metrics = json.loads((d / "flickr_metrics.json").read_text())
    ev.reset()
    for p in json.loads((d / "flickr_predictions.json").read_text()):
        ev.process(
            [{"original_img_id": p["image_id"], "sentence_id": p["sentence_id"]}],
            [{"flickr_ranked_boxes": p["boxes"]}],
        )
    res = ev.evaluate()["flickr"]
    n = 0
    for proto in ("any_box", "merged_box"):
        for k, per_cat in metrics["results"][proto]["report"].items():
            k_name = "Upper_bound" if k == "-1" else f"R@{k}"
            for cat, v in per_cat.items():
                assert res[f"{proto}/{k_name}_{cat}"] == pytest.approx(v, abs=TOL), (proto, k_name, cat)
                n += 1
        # every summarize() key of the official evaluator has a counterpart
        for key, v in metrics["results"][proto]["summarize_return"].items():
            k_name, cat = key.replace("Recall@", "R@").rsplit("_", 1)
            assert res[f"{proto}/{k_name}_{cat}"] == pytest.approx(v, abs=TOL)
    assert n == 48
    got_ids = sorted(f"{i}_{s}" for i, s in ev._gt.evaluated_keys)
    assert got_ids == sorted(metrics["evaluated_sentence_ids"])


def _phrasecut(official_fixtures):
    d = official_fixtures / "evaluators" / "phrasecut"
    gt = PhraseCutGroundTruth(d / "phrasecut_ann", "miniv")
    preds = torch.load(d / "phrasecut_predictions.pt", weights_only=True)["predictions"]
    metrics = json.loads((d / "phrasecut_metrics.json").read_text())
    return gt, preds, metrics


def test_phrasecut_matches_official(official_fixtures):
    gt, preds, metrics = _phrasecut(official_fixtures)
    ev = PhraseCutEvaluator("fixture_phrasecut", ground_truth=gt, allow_missing_tasks=True)
    inputs = [{"original_id": p["original_id"], "task_id": p["task_id"]} for p in preds]
    outputs = [{"phrasecut": {"boxes": p["boxes"], "masks": p["masks"]}} for p in preds]
    res = run(ev, inputs, outputs, batch=2)["phrasecut"]
    n = 0
    for subset, vals in metrics["analyze_stats(['box','mask'])"].items():
        pre = "" if subset == "all" else f"{subset}/"
        pairs = [("mean_box_iou", "box/mIoU"), ("mean_mask_iou", "mask/mIoU"), ("cum_mask_iou", "mask/cIoU")]
        pairs += [(("pred_box_acc", t), f"box/Pr@{t}") for t in vals["pred_box_acc"]]
        pairs += [(("pred_mask_acc", t), f"mask/Pr@{t}") for t in vals["pred_mask_acc"]]
        for off_key, ours in pairs:
            off = vals[off_key[0]][off_key[1]] if isinstance(off_key, tuple) else vals[off_key]
            assert res[pre + ours] == pytest.approx(off, abs=TOL), (subset, ours)
            n += 1
    assert n == 13 * len(metrics["analyze_stats(['box','mask'])"])
    # subsets with no task are absent on both sides
    reported = {k.split("/")[0] for k in res if k.count("/") == 2}
    assert reported == set(metrics["analyze_stats(['box','mask'])"]) - {"all"}
    for k, v in metrics["summarize_return(box Precision@k, subset all)"].items():
        assert res[f"box/{k.replace('Precision', 'Pr')}"] == pytest.approx(v, abs=TOL)
    # printed "Overall mean mask/box iou on miniv" (missing task counted as 0)
    assert round(res["mask/mIoU_assuming_empty"], 4) == 0.4789
    assert round(res["box/mIoU_assuming_empty"], 4) == 0.4888


def test_phrasecut_per_task_stats(official_fixtures):
    gt, preds, metrics = _phrasecut(official_fixtures)
    per_task = metrics["per_task_stats_all[correct, iou_box, iou_mask, i_mask, u_mask]"]
    ours = [phrasecut_task_stats(gt.tasks[p["task_id"]], p["boxes"], p["masks"].numpy()) for p in preds]
    for i, key in enumerate(["iou_box", "iou_mask", "i_mask", "u_mask"]):
        assert [o[i] for o in ours] == pytest.approx(per_task[key], abs=TOL), key
