"""Hand-computed cases for the MDETR evaluators (no fixtures needed)."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from mdetr_d2.evaluation import (
    CLEVREvaluator,
    ClassAgnosticCOCOEvaluator,
    ClevrRefEvaluator,
    FlickrEntitiesGroundTruth,
    FlickrEvaluator,
    GQAEvaluator,
    LVISFixedAPEvaluator,
    PerCategoryTopK,
    PhraseCutEvaluator,
    PhraseCutGroundTruth,
    RefExpEvaluator,
    build_mdetr_evaluators,
    parse_flickr_boxes,
    parse_flickr_sentences,
    phrasecut_prediction,
)
from mdetr_d2.evaluation.flickr import rank_boxes_per_phrase
from mdetr_d2.evaluation.refexp import rank_refexp_boxes, refexp_first_hits


def _inst(boxes, scores, hw=(100, 100), **fields):
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.as_tensor(scores, dtype=torch.float32)
    for k, v in fields.items():
        inst.set(k, v)
    return inst


def _refexp_gt(boxes_per_image, name="refcoco"):
    gt = {}
    for i, boxes in enumerate(boxes_per_image):
        gt[i] = {
            "image": {"id": i, "dataset_name": name},
            "annotations": [{"id": 10 * i + j, "image_id": i, "bbox": b} for j, b in enumerate(boxes)],
        }
    return gt


# ---------------------------------------------------------------- RefExp
def test_giou_stricter_than_iou():
    # GT xywh [0, 0, 10, 10]; prediction shifted by (1.8, 1.8): IoU 0.5065 but GIoU 0.4599.
    g, i = refexp_first_hits([0.9], [[1.8, 1.8, 11.8, 11.8]], [0, 0, 10, 10])
    assert (g, i) == (-1, 0)
    g, i = refexp_first_hits([0.9], [[1.0, 1.0, 11.0, 11.0]], [0, 0, 10, 10])  # IoU .68, GIoU .66
    assert (g, i) == (0, 0)


def test_refexp_tie_order_follows_tuple_sort():
    ranked = rank_refexp_boxes([0.5, 0.5, 0.9], [[1, 0, 2, 2], [3, 0, 4, 2], [5, 5, 6, 6]])
    assert ranked[:, 0].tolist() == [5, 3, 1]  # best score, then the tie with the larger x1 first


def test_refexp_precision_and_errors():
    gt = _refexp_gt([[[0, 0, 10, 10]], [[50, 50, 10, 10]], [[0, 0, 5, 5]]])
    ev = RefExpEvaluator("unit_refexp", ground_truth=gt, topk=(1, 2))
    ev.reset()
    ev.process(
        [{"image_id": 0}, {"image_id": 1}],
        [
            {"instances": _inst([[0, 0, 10, 10], [40, 40, 45, 45]], [0.9, 0.1])},  # hit at rank 0
            {"instances": _inst([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.1])},  # hit at rank 1
        ],
    )
    ev.process([{"image_id": 2}], [{"instances": _inst(np.zeros((0, 4)), [])}])  # empty prediction: a miss
    res = ev.evaluate()["refexp"]
    assert res["refcoco/P@1"] == pytest.approx(1 / 3)
    assert res["refcoco/P@2"] == pytest.approx(2 / 3)

    ev.reset()
    ev.process([{"image_id": 0}], [{"instances": _inst([[0, 0, 10, 10]], [0.9])}])
    with pytest.raises(RuntimeError, match=r"no prediction for 2 datapoint.*\[1, 2\]"):
        ev.evaluate()
    with pytest.raises(KeyError, match="datapoint 7"):
        ev.process([{"image_id": 7}], [{"instances": _inst([[0, 0, 1, 1]], [0.9])}])


def test_clevrref_skips_multi_gt_and_uses_scores_refexp():
    gt = _refexp_gt([[[0, 0, 10, 10]], [[0, 0, 10, 10], [20, 20, 5, 5]]], name="clevrref")
    ev = ClevrRefEvaluator("unit_clevrref", ground_truth=gt)
    ev.reset()
    boxes = [[50, 50, 60, 60], [0, 0, 10, 10]]
    for i in (0, 1):
        inst = _inst(boxes, [0.9, 0.1], scores_refexp=torch.tensor([0.1, 0.8]))
        ev.process([{"image_id": i}], [{"instances": inst}])
    res = ev.evaluate()["clevrref"]
    assert res["clevrref/P@1"] == 1.0  # ranked by scores_refexp; datapoint 1 (two GT boxes) skipped
    with pytest.raises(ValueError, match="datapoint 1 has 2"):
        RefExpEvaluator("unit_refexp2", ground_truth=gt).compute({})


# ---------------------------------------------------------------- Flickr
def _flickr_folder(tmp_path):
    root = tmp_path / "flickr"
    (root / "Annotations").mkdir(parents=True)
    (root / "Sentences").mkdir()
    (root / "val.txt").write_text("42\n")
    objects = [
        ("1", (0, 0, 10, 10)),
        ("2", (0, 0, 10, 10)),
        ("2", (90, 90, 100, 100)),
    ]
    xml = "<annotation><size><width>100</width><height>100</height><depth>3</depth></size>"
    for name, b in objects:
        xml += (
            f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        )
    xml += "<object><name>3</name><nobndbox>0</nobndbox><scene>1</scene></object></annotation>"
    (root / "Annotations" / "42.xml").write_text(xml)
    (root / "Sentences" / "42.txt").write_text(
        "[/EN#1/people A man] and [/EN#2/animals/other two dogs] on [/EN#3/scene the grass] .\n"
        "[/EN#3/scene A lawn] .\n"
    )
    return root


def test_flickr_parsers(tmp_path):
    root = _flickr_folder(tmp_path)
    sents = parse_flickr_sentences(root / "Sentences" / "42.txt")
    assert [[(p.entity_id, p.types, p.first_word_index, p.text) for p in s] for s in sents] == [
        [("1", ["people"], 0, "A man"), ("2", ["animals", "other"], 3, "two dogs"), ("3", ["scene"], 6, "the grass")],
        [("3", ["scene"], 0, "A lawn")],
    ]
    assert parse_flickr_boxes(root / "Annotations" / "42.xml") == {
        "1": [[0, 0, 10, 10]],
        "2": [[0, 0, 10, 10], [90, 90, 100, 100]],
    }


def test_flickr_any_vs_merged_and_token_ranking(tmp_path):
    gt = FlickrEntitiesGroundTruth(_flickr_folder(tmp_path), "val")
    assert gt.evaluated_keys == [("42", 0)]  # the scene phrases have no box; sentence 1 is not evaluated
    ev = FlickrEvaluator("unit_flickr", protocol="any_box", ground_truth=gt, topk=(1, -1))
    ev.reset()
    # Two queries; phrase 0 = token 1, phrase 1 = tokens 3-4.
    boxes = [[90, 90, 100, 100], [0, 0, 10, 10]]
    probs = torch.zeros(2, 256)
    probs[0, 1], probs[1, 1] = 0.2, 0.7  # phrase 0 prefers query 1 (exact hit)
    probs[0, 4], probs[1, 3] = 0.6, 0.1  # phrase 1 prefers query 0: one of the dog boxes
    pos = torch.zeros(2, 256, dtype=torch.bool)
    pos[0, 1] = True
    pos[1, 3:5] = True
    ranked = rank_boxes_per_phrase(probs, boxes, pos)
    assert ranked[0][0].tolist() == [0, 0, 10, 10] and ranked[1][0].tolist() == [90, 90, 100, 100]
    inst = _inst(boxes, [0.9, 0.9], token_probs=probs)
    inp = {"original_img_id": "42", "sentence_id": 0, "positive_map_eval": pos}
    ev.process([inp, inp], [{"instances": inst}, {"instances": inst}])  # repeat = sampler padding
    # sentence 1 has no phrase to evaluate: its (empty) prediction is ignored
    ev.process([{"original_img_id": "42", "sentence_id": 1, "positive_map_eval": pos[:0]}], [{"instances": inst}])
    res = ev.evaluate()["flickr"]
    assert res["any_box/R@1_all"] == 1.0  # the top dog box is one of the entity's boxes
    assert res["merged_box/R@1_all"] == 0.5  # ... but far from their enclosing box
    assert res["merged_box/Upper_bound_all"] == 0.5
    assert res["any_box/R@1_other"] == 1.0 and res["merged_box/R@1_animals"] == 0.0
    assert res["R@1_all"] == res["any_box/R@1_all"]  # separate GT: ANY-BOX is the main protocol


def test_flickr_errors(tmp_path):
    gt = FlickrEntitiesGroundTruth(_flickr_folder(tmp_path), "val")
    ev = FlickrEvaluator("unit_flickr", protocol="any_box", ground_truth=gt)
    with pytest.raises(RuntimeError, match="expected 2 for sentence 0 of image 42"):
        ev.add_ranked("42", 0, [[[0, 0, 1, 1]]])
    with pytest.raises(KeyError, match="image 7"):
        ev.add_ranked("7", 0, [])
    with pytest.raises(KeyError, match="sentence 5 of image 42"):
        ev.add_ranked("42", 5, [])
    with pytest.raises(RuntimeError, match="no prediction for 1 sentence.*42_0"):
        ev.evaluate()
    with pytest.raises(FileNotFoundError, match="test.txt"):
        FlickrEntitiesGroundTruth(tmp_path / "flickr", "test")


# ---------------------------------------------------------------- PhraseCut
def _phrasecut_folder(tmp_path):
    root = tmp_path / "pc"
    root.mkdir()
    (root / "image_data_split.json").write_text(
        json.dumps([{"image_id": 1, "split": "miniv", "width": 20, "height": 10, "coco_id": 3}])
    )
    task = {
        "image_id": 1,
        "task_id": "1__0",
        "phrase": "white dog",
        "phrase_structure": {"name": "dog", "attributes": ["white"], "relation_descriptions": [], "type": "name"},
        "instance_boxes": [[0, 0, 10, 10]],
        "Polygons": [[[[0, 0], [9, 0], [9, 9], [0, 9]]]],
    }
    task2 = dict(task, task_id="1__1")
    (root / "refer_miniv.json").write_text(json.dumps([task, task2]))
    (root / "name_att_rel_count.json").write_text(json.dumps({"cat": [["dog", 5]], "att": [["white", 3]], "rel": []}))
    return root


def test_phrasecut_threshold_and_union():
    masks = torch.zeros(3, 10, 20, dtype=torch.bool)
    masks[0, :5, :5] = True
    masks[1, 5:, 5:] = True
    masks[2, :, 15:] = True
    inst = _inst([[0, 0, 5, 5], [5, 5, 20, 10], [15, 0, 20, 10]], [0.9, 0.7, 0.8], hw=(10, 20), pred_masks=masks)
    boxes, mask = phrasecut_prediction(inst, 0.7)
    assert boxes == [[0, 0, 5, 5], [15, 0, 5, 10]]  # 0.7 is not > 0.7
    assert mask.sum() == 25 + 50 and not mask[9, 9]
    boxes, mask = phrasecut_prediction(inst, 0.95)
    assert boxes == [] and mask.shape == (10, 20) and not mask.any()


def test_phrasecut_evaluator_on_instances(tmp_path):
    gt = PhraseCutGroundTruth(_phrasecut_folder(tmp_path), "miniv")
    ev = PhraseCutEvaluator("unit_pc", ground_truth=gt)
    ev.reset()
    perfect = torch.zeros(1, 10, 20, dtype=torch.bool)
    perfect[0, :10, :10] = True  # the GT polygon 0..9 drawn with outline covers 10x10 pixels
    inst = _inst([[0, 0, 10, 10]], [0.9], hw=(10, 20), pred_masks=perfect)
    empty = _inst([[0, 0, 10, 10]], [0.1], hw=(10, 20), pred_masks=perfect)
    ev.process(
        [{"original_id": 1, "task_id": "1__0"}, {"original_id": 1, "task_id": "1__1"}],
        [{"instances": inst}, {"instances": empty}],
    )
    res = ev.evaluate()["phrasecut"]
    assert res["mask/mIoU"] == pytest.approx(0.5) and res["box/mIoU"] == pytest.approx(0.5)
    assert res["mask/cIoU"] == pytest.approx(100 / 200)
    assert res["mask/Pr@0.9"] == 0.5
    assert res["c_coco/mask/mIoU"] == pytest.approx(0.5) and res["a_color/count"] == 2
    ev.reset()
    ev.process([{"original_id": 1, "task_id": "1__0"}], [{"instances": inst}])
    with pytest.raises(RuntimeError, match=r"no prediction for 1 task.*1__1"):
        ev.evaluate()
    with pytest.raises(KeyError, match="task 9__0"):
        ev.process([{"original_id": 9, "task_id": "9__0"}], [{"instances": inst}])


# ---------------------------------------------------------------- COCO class-agnostic AP
def test_class_agnostic_ap(tmp_path):
    js = tmp_path / "gt.json"
    js.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
                "annotations": [
                    {"id": 1, "image_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0, "category_id": 7},
                    {"id": 2, "image_id": 2, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0, "category_id": 3},
                ],
                "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
            }
        )
    )
    ev = ClassAgnosticCOCOEvaluator("unit_coco", str(js))
    assert ev.has_annotations
    ev.reset()
    ev.process(
        [{"image_id": 1}, {"image_id": 2}],
        [
            {"instances": _inst([[10, 10, 50, 50], [60, 60, 70, 70]], [0.9, 0.2])},
            {"instances": _inst([[0, 0, 50, 50]], [0.8])},
        ],
    )
    res = ev.evaluate()["bbox"]
    assert res["AP"] == pytest.approx(1.0) and res["AP50"] == pytest.approx(1.0)
    ev.reset()
    ev.process([{"image_id": 1}], [{"instances": _inst([[10, 10, 50, 50]], [0.9])}])
    with pytest.raises(RuntimeError, match=r"image_id \[2\]"):
        ev.evaluate()


# ---------------------------------------------------------------- QA
def test_gqa_and_clevr_accuracy_and_files(tmp_path):
    ev = GQAEvaluator("unit_gqa", str(tmp_path))
    ev.reset()
    qs = [("q1", "yes", "rel", "yes", "rel"), ("q2", "red", "attr", "blue", "attr"), ("q3", "cat", "obj", "cat", "rel")]
    for qid, ans, t, pred, ptype in qs:
        ev.process(
            [{"image_id": 0, "questionId": qid, "answer": ans, "question_type": t}],
            [{"qa": {"answer": pred, "answer_type": ptype, "confidence": 0.5}}],
        )
    res = ev.evaluate()["gqa"]
    assert res["accuracy"] == pytest.approx(2 / 3) and res["accuracy_attr"] == 0.0
    assert res["accuracy_answer_type"] == pytest.approx(2 / 3)
    subm = json.loads((tmp_path / "unit_gqa_gqa_predictions.json").read_text())
    assert subm == [{"questionId": q[0], "prediction": q[3]} for q in qs]

    ev = CLEVREvaluator("unit_clevr", str(tmp_path))
    ev.reset()
    for idx, ans, pred in [(2, "3", "3"), (0, "yes", "no"), (1, "cube", "cube")]:
        ev.process([{"image_id": idx + 10, "question_index": idx, "answer": ans}], [{"qa": {"answer": pred}}])
    res = ev.evaluate()["clevr"]
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["accuracy_binary"] == 0.0 and res["accuracy_number"] == 1.0 and res["accuracy_attribute"] == 1.0
    assert (tmp_path / "unit_clevr_clevr_predictions.txt").read_text() == "no\ncube\n3\n"


# ---------------------------------------------------------------- LVIS fixed AP
def test_per_category_topk_equals_full_sort():
    rng = np.random.default_rng(0)
    cats = rng.integers(1, 4, size=500)
    rows = np.concatenate([rng.integers(0, 9, (500, 1)), rng.random((500, 1)), rng.random((500, 4))], axis=1)
    buf = PerCategoryTopK(7)
    for i in range(0, 500, 13):
        buf.add(cats[i : i + 13], rows[i : i + 13])
        assert all(sum(len(c) for c in chunks) < 14 for chunks in buf._chunks.values())  # bounded
    out = buf.result()
    for c in (1, 2, 3):
        sel = rows[cats == c]
        np.testing.assert_array_equal(out[c], sel[np.argsort(-sel[:, 1], kind="stable")[:7]])


def test_lvis_fixed_ap_keeps_topk_over_dataset(tmp_path):
    from lvis import LVIS, LVISEval, LVISResults

    from mdetr_d2.evaluation.lvis_fixed_ap import _numpy_float_alias

    images = [
        {"id": i, "width": 100, "height": 100, "neg_category_ids": [], "not_exhaustive_category_ids": []}
        for i in (1, 2, 3)
    ]
    anns = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900} for i in (1, 2, 3)
    ]
    cats = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"}]
    js = tmp_path / "lvis.json"
    js.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    preds = {  # image -> (boxes, scores)
        1: ([[10, 10, 40, 40], [0, 0, 5, 5]], [0.9, 0.95]),
        2: ([[10, 10, 40, 40]], [0.3]),
        3: ([[10, 10, 40, 40], [50, 50, 60, 60]], [0.8, 0.2]),
    }
    ev = LVISFixedAPEvaluator("unit_lvis", str(js), topk=3)
    ev.reset()
    naive = []
    for img, (boxes, scores) in preds.items():
        # Contiguous id 0 = category 1, the first of the ground truth's categories by id.
        inst = _inst(boxes, scores, pred_classes=torch.zeros(len(scores), dtype=torch.long))
        ev.process([{"image_id": img}], [{"instances": inst}])
        naive += [
            {"image_id": img, "category_id": 1, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for b, s in zip(boxes, scores)
        ]
    res = ev.evaluate()["lvis_fixed_ap"]
    naive = sorted(naive, key=lambda d: -d["score"])[:3]  # the top 3 over the whole dataset
    gt = LVIS(str(js))
    ref = LVISEval(gt, LVISResults(gt, naive, max_dets=-1), "bbox")
    with _numpy_float_alias():
        ref.run()
    assert res["AP"] == pytest.approx(ref.get_results()["AP"], abs=1e-9)
    assert 0 < res["AP"] < 1


# ---------------------------------------------------------------- builder
def test_build_mdetr_evaluators_from_metadata(tmp_path):
    from detectron2.config import get_cfg

    from mdetr_d2.config import add_mdetr_config

    cfg = get_cfg()
    add_mdetr_config(cfg)
    root = _phrasecut_folder(tmp_path)
    js = tmp_path / "pc.json"
    js.write_text(json.dumps({"images": [{"id": 0, "width": 20, "height": 10}], "annotations": [], "categories": []}))
    MetadataCatalog.get("unit_phrasecut_miniv").set(phrasecut_orig_dir=str(root), phrasecut_split="miniv",
                                                    json_file=str(js), evaluator_type="phrasecut")
    evs = build_mdetr_evaluators(cfg, "unit_phrasecut_miniv", str(tmp_path))
    assert [type(e).__name__ for e in evs._evaluators] == ["PhraseCutEvaluator"]  # json has no box: no AP
    MetadataCatalog.get("unit_other").set(evaluator_type="nope")
    with pytest.raises(ValueError, match="unknown evaluator_type 'nope'"):
        build_mdetr_evaluators(cfg, "unit_other", str(tmp_path))
    # Never guessed from the name: a dataset registered without evaluator_type is an error.
    MetadataCatalog.get("unit_refcoco_unnamed_type").set(json_file=str(js))
    with pytest.raises(ValueError, match="unit_refcoco_unnamed_type: no metadata 'evaluator_type'"):
        build_mdetr_evaluators(cfg, "unit_refcoco_unnamed_type", str(tmp_path))


# ---------------------------------------------------------------- issue 12: protocols and QA ids
def test_flickr_evaluator_reads_the_registered_split_and_protocol(tmp_path):
    """One set of Flickr metadata keys (flickr_entities_dir, flickr_split, flickr_gt_type), written by
    the registration and read by the evaluator; nothing guessed from the dataset name."""
    root = _flickr_folder(tmp_path)
    (root / "test.txt").write_text("42\n")
    MetadataCatalog.get("my_captions_eval").set(
        flickr_entities_dir=str(root), flickr_split="test", flickr_gt_type="merged")
    ev = FlickrEvaluator("my_captions_eval")
    assert ev._gt.subset == "test" and ev._protocol == "merged_box"
    MetadataCatalog.get("my_flickr_merged_test").set(flickr_entities_dir=str(root))
    with pytest.raises(ValueError, match="metadata 'flickr_split'"):
        FlickrEvaluator("my_flickr_merged_test")
    MetadataCatalog.get("my_flickr_merged_test").set(flickr_split="test")
    with pytest.raises(ValueError, match="metadata 'flickr_gt_type'"):
        FlickrEvaluator("my_flickr_merged_test")


def test_flickr_registrations_carry_the_evaluator_keys():
    import mdetr_d2.data  # noqa: F401  (registers the built-in datasets)

    for gt_type in ("separate", "merged"):
        for split in ("train", "val", "test"):
            meta = MetadataCatalog.get(f"flickr_{gt_type}_{split}")
            assert (meta.flickr_split, meta.flickr_gt_type) == (split, gt_type)
            assert meta.flickr_entities_dir.endswith("flickr30k_entities")


def test_phrasecut_split_is_never_guessed(tmp_path):
    MetadataCatalog.get("my_phrasecut_test").set(phrasecut_orig_dir=str(_phrasecut_folder(tmp_path)))
    with pytest.raises(ValueError, match="phrasecut_split"):
        PhraseCutEvaluator("my_phrasecut_test")


def _gqa_vocab_dataset(tmp_path, name):
    by_type = {"answer_obj": {"no": 0, "yes": 1, "unknown": 2}, "answer_attr": {"red": 0, "blue": 1, "unknown": 2},
               "answer_rel": {"unknown": 0}, "answer_global": {"unknown": 0}, "answer_cat": {"unknown": 0}}
    (tmp_path / "gqa_answer2id_by_type.json").write_text(json.dumps(by_type))
    (tmp_path / "gqa_answer2id.json").write_text(json.dumps({"no": 0, "yes": 1, "red": 2, "blue": 3, "unknown": 4}))
    MetadataCatalog.get(name).set(gqa_answer_vocab=str(tmp_path / "gqa_answer2id.json"),
                                  gqa_answer_vocab_by_type=str(tmp_path / "gqa_answer2id_by_type.json"))


def test_gqa_evaluator_reads_answer_ids_with_the_dataset_vocabulary(tmp_path):
    """A model built without MODEL.MDETR.QA_VOCAB predicts class ids: the evaluator reads them with the
    dataset's own vocabulary (the files its targets were encoded with), not as strings."""
    _gqa_vocab_dataset(tmp_path, "unit_gqa_ids")
    ev = GQAEvaluator("unit_gqa_ids")
    ev.reset()
    questions = [  # (answer, type, predicted id, predicted type)
        ("yes", "obj", 1, "obj"), ("blue", "attr", 1, "attr"), ("red", "attr", 7, "attr"), ("no", "obj", 4, "all")]
    for i, (answer, qtype, pred, ptype) in enumerate(questions):
        ev.process([{"image_id": i, "questionId": f"q{i}", "answer": answer, "question_type": qtype}],
                   [{"qa": {"answer": pred, "answer_type": ptype, "confidence": 1.0}}])
    res = ev.evaluate()["gqa"]
    # ids 1 (obj) = "yes", 1 (attr) = "blue", 4 (single head) = "unknown"; 7 is outside the vocabulary.
    assert res["accuracy"] == pytest.approx(2 / 4)
    MetadataCatalog.get("unit_gqa_no_vocab").set(evaluator_type="gqa")
    ev = GQAEvaluator("unit_gqa_no_vocab")
    with pytest.raises(ValueError, match="gqa_answer_vocab_by_type"):
        ev.process([{"image_id": 0, "questionId": "q", "answer": "yes", "question_type": "obj"}],
                   [{"qa": {"answer": 1, "answer_type": "obj"}}])


def test_qa_datasets_without_qa_head_and_qa_only_models(tmp_path):
    """CLEVR detection pre-training evaluates CLEVR sets with box AP (no QA head, no accuracy); a
    QA-only model (NO_DETECTION, CLEVR-Humans) gets accuracy only."""
    from detectron2.config import get_cfg

    from mdetr_d2.config import add_mdetr_config

    js = tmp_path / "clevr.json"
    js.write_text(json.dumps({"images": [{"id": 0, "width": 20, "height": 10, "caption": "a"}],
                              "annotations": [{"id": 1, "image_id": 0, "bbox": [1, 1, 5, 5], "category_id": 1,
                                               "area": 25, "iscrowd": 0}],
                              "categories": [{"id": 1, "name": "object"}]}))
    MetadataCatalog.get("unit_clevr_medium_val").set(evaluator_type="clevr", json_file=str(js))
    cfg = get_cfg()
    add_mdetr_config(cfg)
    names = lambda c: [type(e).__name__ for e in build_mdetr_evaluators(c, "unit_clevr_medium_val")._evaluators]  # noqa: E731
    assert names(cfg) == ["ClassAgnosticCOCOEvaluator"]
    cfg.MODEL.MDETR.QA_HEAD = "clevr"
    assert names(cfg) == ["CLEVREvaluator", "ClassAgnosticCOCOEvaluator"]
    cfg.MODEL.MDETR.NO_DETECTION = True
    assert names(cfg) == ["CLEVREvaluator"]
