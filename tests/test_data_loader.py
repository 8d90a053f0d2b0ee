"""MDETR json loader, dataset registration and multi-dataset concatenation."""

import json
import re

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.structures import BoxMode

import mdetr_d2.data as D


def _write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _coco(images, annotations):
    return {
        "info": {},
        "licenses": [],
        "categories": [{"id": 1, "name": "object"}],
        "images": images,
        "annotations": annotations,
    }


# Examples in each released format (reference §5.3-§5.10).
REFEXP = _coco(
    [
        {
            "file_name": "COCO_train2014_000000123456.jpg",
            "height": 480,
            "width": 640,
            "id": 7,
            "original_id": 123456,
            "caption": "the left man in blue",
            "dataset_name": "refcoco",
            "tokens_negative": [[0, 3]],
        }
    ],
    [
        {
            "area": 5210.4,
            "iscrowd": 0,
            "image_id": 7,
            "category_id": 1,
            "id": 7,
            "bbox": [12.5, 80.0, 60.0, 180.0],
            "original_id": 998877,
            "tokens_positive": [[0, 3], [4, 8], [9, 12]],
        }
    ],
)
FLICKR = _coco(
    [
        {
            "file_name": "1000268201.jpg",
            "height": "500",
            "width": "375",
            "id": 42,
            "caption": "A man in a red shirt holds a dog .",
            "dataset_name": "flickr",
            "tokens_negative": [[0, 34]],
            "sentence_id": 2,
            "original_img_id": 1000268201,
            "tokens_positive_eval": [[[0, 5]], [[9, 20]], [[27, 32]]],
        }
    ],
    [
        {
            "area": 40000.0,
            "iscrowd": 0,
            "image_id": 42,
            "category_id": 1,
            "id": 100,
            "bbox": [20.0, 35.0, 160.0, 250.0],
            "tokens_positive": [[0, 5]],
        },
        {
            "area": 3500.0,
            "iscrowd": 0,
            "image_id": 42,
            "category_id": 1,
            "id": 101,
            "bbox": [60.0, 90.0, 70.0, 50.0],
            "tokens_positive": [[9, 20]],
        },
        {
            "area": 9e4,
            "iscrowd": 1,
            "image_id": 42,
            "category_id": 1,
            "id": 102,
            "bbox": [0.0, 0.0, 300.0, 300.0],
            "tokens_positive": [[0, 5]],
        },
    ],
)
MIXED = _coco(
    [
        {
            "file_name": "COCO_train2014_000000098765.jpg",
            "height": 427,
            "width": 640,
            "id": 5,
            "original_id": 98765,
            "caption": "black dog on the left. What is the man holding?",
            "data_source": "coco",
            "dataset_name": "mixed",
        },
        {
            "file_name": "2354786.jpg",
            "height": 500,
            "width": 333,
            "id": 6,
            "original_id": 2354786,
            "caption": "a tree.",
            "data_source": "vg",
            "dataset_name": "mixed",
        },
    ],
    [
        {
            "area": 9000.0,
            "iscrowd": 0,
            "image_id": 5,
            "category_id": 18,
            "id": 11,
            "bbox": [5.0, 200.0, 150.0, 120.0],
            "tokens_positive": [[0, 9]],
        }
    ],
)
GQA = _coco(
    [
        {
            "file_name": "2354786.jpg",
            "height": 500,
            "width": 333,
            "id": 0,
            "original_id": "2354786",
            "caption": "What color is the large sky?",
            "tokens_negative": [[0, 28]],
            "dataset_name": "gqa",
            "question_type": "attr",
            "answer": "blue",
            "questionId": "02930152",
        }
    ],
    [
        {
            "area": 50000.0,
            "iscrowd": 0,
            "category_id": 1,
            "bbox": [0.0, 0.0, 333.0, 150.0],
            "tokens_positive": [[24, 27]],
            "image_id": 0,
            "id": 0,
        }
    ],
)
CLEVR = _coco(
    [
        {
            "file_name": "CLEVR_train_000123.png",
            "height": 320,
            "width": 480,
            "id": 3,
            "caption": "Is the big red cube left of the small sphere?",
            "answer": "yes",
        }
    ],
    [
        {
            "area": 2100.0,
            "iscrowd": 0,
            "image_id": 3,
            "category_id": 1,
            "id": 8,
            "bbox": [140.0, 120.0, 50.0, 42.0],
            "tokens": [[7, 19]],
            "isfinal": 1,
        },
        {
            "area": 600.0,
            "iscrowd": 0,
            "image_id": 3,
            "category_id": 1,
            "id": 9,
            "bbox": [300.0, 160.0, 24.0, 25.0],
            "tokens": [[32, 44]],
            "isfinal": 0,
        },
    ],
)
PHRASECUT = _coco(
    [
        {
            "file_name": "2412345.jpg",
            "height": 600,
            "width": 800,
            "id": 0,
            "original_id": 2412345,
            "caption": "white clouds",
            "tokens_negative": [[0, 12]],
            "dataset_name": "phrasecut",
            "task_id": "2412345__1",
        }
    ],
    [
        {
            "area": 30000.0,
            "iscrowd": 0,
            "category_id": 1,
            "bbox": [100, 20, 300, 100],
            "segmentation": [[100, 20, 400, 20, 400, 120, 100, 120]],
            "tokens_positive": [[0, 12]],
            "image_id": 0,
            "id": 0,
        }
    ],
)
LVIS = _coco(
    [
        {
            "file_name": "train2017/000000391895.jpg",
            "height": 360,
            "width": 640,
            "id": 12,
            "original_id": 391895,
            "coco_url": "http://images.cocodataset.org/train2017/000000391895.jpg",
            "caption": "motorcycle",
            "tokens_negative": [[0, 10]],
            "dataset_name": "lvis",
        },
        {
            "file_name": "train2017/000000391895.jpg",
            "height": 360,
            "width": 640,
            "id": 13,
            "original_id": 391895,
            "caption": "giraffe",
            "dataset_name": "lvis",
        },
    ],
    [
        {
            "area": 12000.0,
            "iscrowd": 0,
            "category_id": 1,
            "bbox": [359.2, 146.2, 112.2, 213.6],
            "tokens_positive": [[0, 10]],
            "image_id": 12,
            "id": 40,
        }
    ],
)


def test_refexp_record_fields(tmp_path):
    (rec,) = D.load_mdetr_json(_write(tmp_path / "r.json", REFEXP), "/imgs")
    assert rec["file_name"] == "/imgs/COCO_train2014_000000123456.jpg"
    assert (rec["height"], rec["width"], rec["image_id"]) == (480, 640, 7)
    assert rec["caption"] == "the left man in blue" and rec["dataset_name"] == "refcoco"
    assert rec["original_id"] == 123456
    (ann,) = rec["annotations"]
    assert ann["bbox"] == [12.5, 80.0, 60.0, 180.0] and ann["bbox_mode"] == BoxMode.XYWH_ABS
    assert ann["category_id"] == 1 and ann["tokens_positive"] == [[0, 3], [4, 8], [9, 12]]
    # unused fields are not kept (compact records)
    assert "tokens_negative" not in rec and "area" not in ann and "iscrowd" not in ann


def test_flickr_string_sizes_eval_spans_and_crowd(tmp_path):
    (rec,) = D.load_mdetr_json(_write(tmp_path / "f.json", FLICKR), "/imgs")
    assert (rec["height"], rec["width"]) == (500, 375)
    assert rec["sentence_id"] == 2 and rec["original_img_id"] == 1000268201
    assert rec["tokens_positive_eval"] == [[[0, 5]], [[9, 20]], [[27, 32]]]
    assert len(rec["annotations"]) == 2  # crowd dropped


def test_mixed_image_root_by_data_source(tmp_path):
    recs = D.load_mdetr_json(_write(tmp_path / "m.json", MIXED), {"coco": "/coco", "vg": "/vg"})
    assert recs[0]["file_name"] == "/coco/COCO_train2014_000000098765.jpg"
    assert recs[1]["file_name"] == "/vg/2354786.jpg" and recs[1]["annotations"] == []
    bad = json.loads(json.dumps(MIXED))
    bad["images"][1]["data_source"] = "flickr"
    with pytest.raises(D.DatasetFormatError, match=r"m2.json.*id=6.*data_source"):
        D.load_mdetr_json(_write(tmp_path / "m2.json", bad), {"coco": "/coco", "vg": "/vg"})


def test_gqa_clevr_phrasecut_lvis(tmp_path):
    (g,) = D.load_mdetr_json(_write(tmp_path / "g.json", GQA), "/gqa")
    assert (g["answer"], g["question_type"], g["questionId"]) == ("blue", "attr", "02930152")
    (c,) = D.load_mdetr_json(_write(tmp_path / "c.json", CLEVR), "/clevr")
    assert c["answer"] == "yes"
    assert [a["tokens_positive"] for a in c["annotations"]] == [
        [[7, 19]],
        [[32, 44]],
    ]  # "tokens" renamed
    assert [a["isfinal"] for a in c["annotations"]] == [1, 0]
    (p,) = D.load_mdetr_json(_write(tmp_path / "p.json", PHRASECUT), "/vg")
    assert p["task_id"] == "2412345__1"
    assert p["annotations"][0]["segmentation"] == [[100, 20, 400, 20, 400, 120, 100, 120]]
    lv = D.load_mdetr_json(_write(tmp_path / "l.json", LVIS), "/coco")
    assert lv[0]["file_name"] == "/coco/train2017/000000391895.jpg"
    assert lv[1]["annotations"] == []  # negative caption: kept without boxes


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'my_set'.*nope\.json"):
        D.load_mdetr_json(str(tmp_path / "nope.json"), "/imgs", "my_set")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d["images"][0].pop("caption"), r"id=42.*'caption'"),
        (lambda d: d["images"][0].update(caption="  "), r"id=42.*'caption'"),
        (
            lambda d: d["annotations"][0].update(tokens_positive=[[0, 99]]),
            r"id=100.*tokens_positive.*outside",
        ),
        (
            lambda d: d["annotations"][0].update(tokens_positive=[[5, 2]]),
            r"id=100.*tokens_positive",
        ),
        (lambda d: d["annotations"][1].pop("tokens_positive"), r"id=101.*tokens_positive"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"id=100.*'bbox'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 3]), r"id=100.*'bbox'"),
        (
            lambda d: d["images"][0].update(tokens_positive_eval=[[[0, 500]]]),
            r"id=42.*tokens_positive_eval",
        ),
        (lambda d: d["images"][0].pop("height"), r"id=42.*'height'"),
    ],
)
def test_bad_records_name_file_record_field(tmp_path, mutate, pattern):
    data = json.loads(json.dumps(FLICKR))
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, allow_nan=True))
    with pytest.raises(D.DatasetFormatError, match="bad.json.*" + pattern):
        D.load_mdetr_json(str(path), "/imgs")


def test_register_is_lazy_and_sets_metadata(tmp_path):
    missing = str(tmp_path / "later.json")
    D.register_mdetr_json("test_data_lazy_set", missing, "/imgs", evaluator_type="refexp")
    assert "test_data_lazy_set" in D.MDETR_DATASET_NAMES
    meta = MetadataCatalog.get("test_data_lazy_set")
    assert (meta.json_file, meta.image_root, meta.evaluator_type) == (missing, "/imgs", "refexp")
    _write(tmp_path / "later.json", REFEXP)  # created after registration: read only when used
    assert len(DatasetCatalog.get("test_data_lazy_set")) == 1
    D.register_mdetr_json("test_data_lazy_set", missing, "/imgs")  # idempotent


def test_builtin_registrations():
    names = set(D.MDETR_DATASET_NAMES)
    expected = {
        "flickr_separate_train",
        "flickr_merged_val",
        "flickr_separate_test",
        "refcoco_testA",
        "refcoco+_testB",
        "refcocog_test",
        "refexp_pretrain_val",
        "phrasecut_miniv",
        "phrasecut_train",
        "gqa_det_val",
        "gqa_all_train",
        "gqa_balanced_val",
        "gqa_testdev_balanced",
        "gqa_submission",
        "mixed_train",
        "vg_train",
        "lvis1_train",
        "lvis10_train",
        "lvis100_val",
        "lvis_v1_minival",
        "clevr_medium_train",
        "clevr_full_val",
        "clevr_cogent_medium_trainA",
        "clevr_cogent_questions_valB",
        "clevr_humans_train",
        "clevrref_val",
    }
    assert expected <= names
    m = MetadataCatalog.get("flickr_merged_test")
    assert (m.evaluator_type, m.flickr_split, m.flickr_gt_type) == ("flickr", "test", "merged")
    assert m.image_root.endswith("val")  # test images live in the val folder (official)
    m = MetadataCatalog.get("phrasecut_miniv")
    assert (m.evaluator_type, m.phrasecut_split) == ("phrasecut", "miniv") and m.phrasecut_orig_dir
    assert MetadataCatalog.get("gqa_all_train").gqa_answer_vocab.endswith("gqa_answer2id.json")
    assert MetadataCatalog.get("lvis_v1_minival").lvis_json.endswith("lvis_v1_minival.json")
    assert MetadataCatalog.get("clevrref_val").evaluator_type == "clevrref"
    assert MetadataCatalog.get("mixed_train").image_root.keys() == {"coco", "vg"}


def test_multi_dataset_concatenation_keeps_empty_records(tmp_path):
    D.register_mdetr_json("test_data_multi_a", _write(tmp_path / "a.json", LVIS), "/coco")
    D.register_mdetr_json("test_data_multi_b", _write(tmp_path / "b.json", CLEVR), "/clevr")
    dicts = get_detection_dataset_dicts(
        ["test_data_multi_a", "test_data_multi_b"], filter_empty=False
    )
    assert [d["caption"] for d in dicts] == ["motorcycle", "giraffe", CLEVR["images"][0]["caption"]]


def test_clevr_questions_and_lvis_json(tmp_path):
    q = {
        "questions": [
            {
                "image_filename": "CLEVR_val_000000.png",
                "question": "Are there cubes?",
                "answer": "no",
                "question_index": 17,
            },
            {
                "image_filename": "CLEVR_val_000001.png",
                "question": "How many?",
                "question_index": 18,
            },
        ]
    }
    recs = D.load_clevr_questions(_write(tmp_path / "q.json", q), "/clevr/val")
    assert recs[0]["image_id"] == 17 and recs[0]["answer"] == "no" and recs[0]["annotations"] == []
    assert "answer" not in recs[1] and (recs[1]["height"], recs[1]["width"]) == (320, 480)
    lv = {
        "images": [
            {
                "id": 5,
                "height": 10,
                "width": 20,
                "coco_url": "http://x/val2017/000000000005.jpg",
                "neg_category_ids": [3],
            }
        ],
        "annotations": [{"id": 1, "image_id": 5, "bbox": [1, 1, 2, 2], "category_id": 4}],
        "categories": [{"id": 4, "name": "zebra"}, {"id": 3, "name": "aerosol_can"}],
    }
    (r,) = D.load_lvis_v1_json(_write(tmp_path / "lv.json", lv), "/coco", "test_lvis_json")
    assert r["file_name"] == "/coco/val2017/000000000005.jpg" and r["neg_category_ids"] == [3]
    # Detectron2's convention: contiguous ids in the records, the names as thing_classes (id order).
    assert r["annotations"][0]["category_id"] == 1 and "caption" not in r
    meta = MetadataCatalog.get("test_lvis_json")
    assert meta.thing_classes == ["aerosol_can", "zebra"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 4: 1}
    lv["annotations"][0]["category_id"] = 9
    with pytest.raises(D.DatasetFormatError, match="id=1: field 'category_id' 9 is not a category"):
        D.load_lvis_v1_json(_write(tmp_path / "lv.json", lv), "/coco")


# Silent-data cases: each was accepted without a word before.
def test_duplicate_image_ids_are_refused(tmp_path):
    data = json.loads(json.dumps(LVIS))
    data["images"][1]["id"] = 12  # the second caption would get the first one's box and spans
    with pytest.raises(D.DatasetFormatError, match=r"d\.json: images\[1\]: duplicate image id 12 "
                                                   r"\(also images\[0\]\)"):
        D.load_mdetr_json(_write(tmp_path / "d.json", data), "/coco")


def test_orphan_annotations_are_counted_with_their_ids(tmp_path, caplog):
    data = json.loads(json.dumps(FLICKR))
    data["annotations"][0]["image_id"] = 43
    data["annotations"][1]["image_id"] = 44
    (rec,) = D.load_mdetr_json(_write(tmp_path / "o.json", data), "/imgs")
    assert len(rec["annotations"]) == 0
    assert re.search(r"o\.json: 2 annotation\(s\) refer to 2 image id\(s\) that have no entry in "
                     r"'images' and are ignored: image_id 43, 44", caplog.text)


@pytest.mark.parametrize("spans", [[], [[0, 0]], [[1, 2]]])  # " " is caption[1:2]
def test_spans_covering_no_text_are_reported_once_per_file(tmp_path, caplog, spans):
    data = json.loads(json.dumps(FLICKR))
    data["images"][0]["caption"] = "A man in a red shirt holds a dog ."
    for ann in data["annotations"][:2]:
        ann["tokens_positive"] = spans
    records = D.load_mdetr_json(_write(tmp_path / "s.json", data), "/imgs")
    assert [a["tokens_positive"] for a in records[0]["annotations"]] == [spans, spans]  # kept
    warnings = [r.getMessage() for r in caplog.records if "cover no text" in r.getMessage()]
    assert len(warnings) == 1 and "s.json: 2 box(es)/phrase(s)" in warnings[0]
    assert f"image entry id=42, annotation id=100, tokens_positive = {spans!r}" in warnings[0]


@pytest.mark.parametrize("content, pattern", [
    (b'{"images": [{"id": 1,}]}', r"line 1 column 22 \(character 21\): malformed json"),
    (b'{"images": [], "x": "caf\xe9"}', r"byte 24: not UTF-8 text"),
    (b'{"images": [],\n "x": 1\n', r"line 3 column 1 .*malformed json"),
])
def test_unparseable_files_are_named_with_the_position(tmp_path, content, pattern):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(D.DatasetFormatError, match=r"broken\.json: " + pattern):
        D.load_mdetr_json(str(path), "/imgs")


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(REFEXP).encode())
    (rec,) = D.load_mdetr_json(str(path), "/imgs")
    assert rec["caption"] == "the left man in blue"


def test_registering_a_name_with_another_json_is_an_error(tmp_path):
    first, second = _write(tmp_path / "a.json", REFEXP), _write(tmp_path / "b.json", REFEXP)
    D.register_mdetr_json("test_data_reregister", first, "/imgs", evaluator_type="refexp")
    D.register_mdetr_json("test_data_reregister", first, "/imgs")  # the same files: fine
    with pytest.raises(ValueError, match=r"'test_data_reregister' is already registered with "
                                         r"json_file=.*a\.json.*cannot register it again with "
                                         r"json_file=.*b\.json"):
        D.register_mdetr_json("test_data_reregister", second, "/imgs", evaluator_type="flickr")
    assert MetadataCatalog.get("test_data_reregister").json_file == first
