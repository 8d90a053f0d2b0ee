"""Dataset converters (COCO detection -> MDETR, ODVG <-> MDETR) on small files in the real formats,
through ``tools/convert_dataset.py`` and on to ``tools/train_net.py``."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from mdetr_d2.data import load_mdetr_json
from mdetr_d2.data.converters import (
    ConversionReport,
    coco_detection_images,
    detection_to_mdetr,
    mdetr_to_odvg_grounding,
    odvg_grounding_to_mdetr,
    phrase_of,
)
from mdetr_d2.structures import clean_category_name

convert_dataset = __import__("tools.convert_dataset", fromlist=["main"]).main

# Three categories with LVIS-style names (the cleaning must apply), one never present.
COCO = {
    "info": {"description": "tiny"},
    "images": [
        {"id": 11, "file_name": "img0.png", "height": 48, "width": 64, "license": 3},
        {"id": 12, "file_name": "img1.png", "height": 48, "width": 64},
        {"id": 13, "file_name": "img2.png", "height": 48, "width": 64},
    ],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 5, "bbox": [4, 6, 20, 18.5], "area": 370.0,
         "iscrowd": 0, "segmentation": [[4, 6, 24, 6, 24, 24.5, 4, 24.5]]},
        {"id": 2, "image_id": 11, "category_id": 2, "bbox": [30.25, 10, 16, 16], "area": 256.0,
         "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 5, "bbox": [40, 30, 12, 10], "area": 120.0,
         "iscrowd": 0},
        {"id": 4, "image_id": 12, "category_id": 2, "bbox": [10, 10, 30, 20], "area": 600.0,
         "iscrowd": 0},
    ],
    "categories": [
        {"id": 2, "name": "hot_dog", "supercategory": "food"},
        {"id": 5, "name": "bow_(weapon)", "supercategory": "thing"},
        {"id": 9, "name": "zebra", "supercategory": "animal"},
    ],
}

# ODVG grounding records as MMDetection documents them (the usage guide's example, and the shapes
# goldg2odvg.py writes: a phrase list for non-contiguous spans, a list of boxes for a shared
# phrase), plus a phrase its spans do not spell and a record without regions.
ODVG_GROUNDING = [
    {"filename": "2405116.jpg", "height": 375, "width": 500,
     "grounding": {"caption": "Two surfers walking down the shore. sand on the beach.",
                   "regions": [
                       {"bbox": [206, 156, 282, 248], "phrase": "Two surfers",
                        "tokens_positive": [[0, 3], [4, 11]]},
                       {"bbox": [303, 338, 443, 343], "phrase": "sand",
                        "tokens_positive": [[36, 40]]},
                       {"bbox": [[327, 223, 421, 282], [300, 200, 400, 210]], "phrase": "beach",
                        "tokens_positive": [[48, 53]]}]}},
    {"filename": "1000268201.jpg", "height": 500, "width": 375,
     "grounding": {"caption": "A man in a red shirt holds a dog .",
                   "regions": [
                       {"bbox": [20.5, 35.25, 180.75, 285.0], "phrase": ["A man", "shirt"],
                        "tokens_positive": [[0, 5], [15, 20]]},
                       {"bbox": [60.1, 90.7, 130.3, 140.9], "phrase": "the dog",
                        "tokens_positive": [[29, 32]]}]}},
    {"filename": "empty.jpg", "height": 10, "width": 10,
     "grounding": {"caption": "nothing here", "regions": []}},
]

# ODVG detection records as the usage guide shows them (o365 float boxes), with a label map.
ODVG_LABEL_MAP = {str(i): name for i, name in enumerate(
    ["person", "sneakers", "chair", "other shoes", "hat", "car", "lamp", "glasses", "bottle"])}
ODVG_DETECTION = [
    {"filename": "obj365_train_000000734304.jpg", "height": 512, "width": 769,
     "detection": {"instances": [
         {"bbox": [109.4768676992, 346.0190429696, 135.1918335098, 365.3641967616], "label": 2,
          "category": "chair"},
         {"bbox": [58.612365705900004, 323.2281494016, 242.6005859067, 451.4166870016], "label": 5,
          "category": "car"}]}},
    {"filename": "obj365_train_000000000002.jpg", "height": 300, "width": 400,
     "detection": {"instances": [
         {"bbox": [10, 20, 30, 40], "label": 0, "category": "person"},
         {"bbox": [50, 60, 70.5, 80.5], "label": 8, "category": "bottle"},
         {"bbox": [12, 22, 32, 42], "label": 0, "category": "person"}]}},
]


def _write_jsonl(path, records):
    # What MMDetection's converters write (jsonlines' defaults).
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _write_images(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image in images:
        pixels = rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / image["file_name"])


def test_coco_to_mdetr_one_caption_per_image(tmp_path, tiny_text_encoder):
    (tmp_path / "coco.json").write_text(json.dumps(COCO))
    _write_images(tmp_path / "images", COCO["images"])
    rc = convert_dataset(["coco2mdetr", str(tmp_path / "coco.json"), str(tmp_path / "mdetr.json"),
                          "--image-root", str(tmp_path / "images"),
                          "--tokenizer", tiny_text_encoder])
    assert rc == 0
    data = json.loads((tmp_path / "mdetr.json").read_text())
    # Image 13 has no box and no negative was asked: no caption can be made, it is skipped.
    assert [e["original_id"] for e in data["images"]] == [11, 12]
    first = data["images"][0]
    # Names in category-id order, cleaned as MDETR's LVIS code does, then stripped.
    assert first["caption"] == "hot dog. bow"
    assert first["license"] == 3  # source fields kept
    assert first["tokens_positive_eval"] == [[[0, 7]], [[9, 12]]]
    anns = [a for a in data["annotations"] if a["image_id"] == first["id"]]
    assert [a["original_id"] for a in anns] == [1, 2, 3]  # source order kept
    for ann in anns:
        (begin, end), = ann["tokens_positive"]
        name = {2: "hot_dog", 5: "bow_(weapon)"}[ann["category_id"]]
        assert first["caption"][begin:end] == clean_category_name(name).strip()
    assert anns[0]["segmentation"] == COCO["annotations"][0]["segmentation"]
    assert data["categories"] == COCO["categories"]
    records = load_mdetr_json(str(tmp_path / "mdetr.json"), str(tmp_path / "images"))
    assert [len(r["annotations"]) for r in records] == [3, 1]


def test_coco_to_mdetr_lvis_layout_with_negatives():
    """names_per_caption=1, negatives=-1 on an LVIS file: the official LVIS fine-tuning layout."""
    lvis = json.loads(json.dumps(COCO))
    for image in lvis["images"]:
        image["coco_url"] = f"http://images.cocodataset.org/train2017/{image.pop('file_name')}"
    lvis["images"][0]["neg_category_ids"] = [9]
    lvis["images"][1]["neg_category_ids"] = [5, 9]
    lvis["images"][1]["not_exhaustive_category_ids"] = [9]
    images, categories = coco_detection_images(lvis)
    report = ConversionReport()
    data = detection_to_mdetr(images, categories, names_per_caption=1, negatives=-1, report=report)
    layout = [(e["original_id"], e["file_name"], e["caption"],
               len([a for a in data["annotations"] if a["image_id"] == e["id"]]))
              for e in data["images"]]
    assert layout == [
        (11, "train2017/img0.png", "hot dog", 1), (11, "train2017/img0.png", "bow", 2),
        (11, "train2017/img0.png", "zebra", 0),
        (12, "train2017/img1.png", "hot dog", 1), (12, "train2017/img1.png", "bow", 0),
    ]
    assert all(a["tokens_positive"] == [[0, len(e["caption"])]]
               for e in data["images"] for a in data["annotations"] if a["image_id"] == e["id"])
    assert report.counts["datapoints without boxes"] == 2
    assert report.counts["images skipped (no box and no negative to make a caption)"] == 1


def test_sampled_negatives_are_absent_and_seeded():
    images, categories = coco_detection_images(COCO)
    first = detection_to_mdetr(images, categories, negatives=1, seed=3)
    again = detection_to_mdetr(images, categories, negatives=1, seed=3)
    assert first == again
    # Image 12 holds a hot dog; its one negative is another category, named without a box.
    entry = first["images"][1]
    names = entry["caption"].split(". ")
    assert entry["original_id"] == 12 and len(names) == 2 and "hot dog" in names
    negative = next(n for n in names if n != "hot dog")
    assert negative in ("bow", "zebra")
    begin = entry["caption"].index("hot dog")
    assert entry["tokens_positive_eval"] == [[[begin, begin + 7]]]  # only the present category
    boxes = [a for a in first["annotations"] if a["image_id"] == entry["id"]]
    assert [a["category_id"] for a in boxes] == [2]
    # Image 13 (no box) now has a caption made of one absent name.
    assert first["images"][2]["original_id"] == 13
    assert not [a for a in first["annotations"] if a["image_id"] == first["images"][2]["id"]]


def test_odvg_grounding_round_trip_reproduces_the_file(tmp_path, caplog):
    source = tmp_path / "goldg_vg.json"
    _write_jsonl(source, ODVG_GROUNDING)
    assert convert_dataset(["odvg2mdetr", str(source), str(tmp_path / "mdetr.json")]) == 0
    data = json.loads((tmp_path / "mdetr.json").read_text())
    assert len(data["images"]) == 3 and len(data["annotations"]) == 6  # "beach" has two boxes
    beach = [a for a in data["annotations"] if a["tokens_positive"] == [[48, 53]]]
    assert [a["bbox"] for a in beach] == [[327, 223, 94, 59], [300, 200, 100, 10]]
    assert [a.get("phrase") for a in data["annotations"]].count("the dog") == 1  # kept: not spelled
    caplog.clear()
    assert convert_dataset(
        ["mdetr2odvg", str(tmp_path / "mdetr.json"), str(tmp_path / "back.json")]) == 0
    assert (tmp_path / "back.json").read_text() == source.read_text()
    assert "has no place" not in caplog.text  # nothing to drop: the formats overlap fully here


def test_odvg_detection_round_trip_reproduces_the_file(tmp_path):
    source, label_map = tmp_path / "o365_od.json", tmp_path / "o365_label_map.json"
    _write_jsonl(source, ODVG_DETECTION)
    label_map.write_text(json.dumps(ODVG_LABEL_MAP))
    assert convert_dataset(["odvg2mdetr", str(source), str(tmp_path / "mdetr.json"),
                            "--label-map", str(label_map)]) == 0
    data = json.loads((tmp_path / "mdetr.json").read_text())
    assert [e["caption"] for e in data["images"]] == ["chair. car", "person. bottle"]
    assert data["annotations"][0]["bbox"][:2] == [109.4768676992, 346.0190429696]
    assert convert_dataset(["mdetr2odvg", str(tmp_path / "mdetr.json"), str(tmp_path / "back.json"),
                            "--detection"]) == 0
    assert (tmp_path / "back.json").read_text() == source.read_text()
    assert json.loads((tmp_path / "back_label_map.json").read_text()) == ODVG_LABEL_MAP


def test_mdetr_to_odvg_and_back_keeps_boxes_captions_spans(official_fixtures, caplog):
    """An official-format MDETR json (the parity fixture's annotations) through ODVG and back."""
    data = json.loads((official_fixtures / "det_r18" / "annotations.json").read_text())
    caplog.set_level("WARNING")
    report = ConversionReport()
    records = mdetr_to_odvg_grounding(data, report)
    report.finish()
    back = odvg_grounding_to_mdetr(json.loads(json.dumps(records)))

    def content(d):
        by_image = {}
        for ann in d["annotations"]:
            if ann.get("iscrowd", 0) != 1:
                spans = ann.get("tokens_positive", ann.get("tokens"))
                box = (tuple(ann["bbox"]), json.dumps(spans))
                by_image.setdefault(ann["image_id"], []).append(box)
        return [(e["caption"], sorted(by_image.get(e["id"], []))) for e in d["images"]]

    assert content(back) == content(data)
    kept = {"id", "file_name", "height", "width", "caption"}
    dropped = {k for e in data["images"] for k in e} - kept
    for field in dropped:  # every field ODVG cannot hold is named
        assert any(f"'{field}' (image entries)" in w for w in report.warnings), field


def test_mdetr_to_odvg_names_what_it_drops():
    data = {"images": [{"id": 0, "file_name": "a.jpg", "height": "40", "width": "60",
                        "caption": "a cat", "tokens_positive_eval": [[[2, 5]]], "sentence_id": 2}],
            "annotations": [{"id": 0, "image_id": 0, "bbox": [1, 2, 3, 4],
                             "tokens_positive": [[2, 5]], "segmentation": [[1, 2, 4, 2, 4, 6]],
                             "iscrowd": 0, "category_id": 1},
                            {"id": 1, "image_id": 0, "bbox": [1, 2, 30, 4],
                             "tokens_positive": [[2, 5]], "iscrowd": 1, "category_id": 1}],
            "categories": [{"id": 1, "name": "object"}]}
    report = ConversionReport()
    records = mdetr_to_odvg_grounding(data, report)
    report.finish()
    assert records == [{"filename": "a.jpg", "height": 40, "width": 60, "grounding": {
        "caption": "a cat", "regions": [{"bbox": [1, 2, 4, 6], "phrase": "cat",
                                         "tokens_positive": [[2, 5]]}]}}]
    text = "\n".join(report.warnings)
    for name in ("'tokens_positive_eval'", "'sentence_id'", "'segmentation'", "crowd"):
        assert name in text


def test_phrase_of_follows_the_odvg_convention():
    caption = "Two surfers walking down the shore."
    assert phrase_of(caption, [[4, 11], [0, 3]]) == "Two surfers"
    assert phrase_of(caption, [[0, 3], [12, 19]]) == ["Two", "walking"]
    assert phrase_of(caption, [[0, 11]]) == "Two surfers"


def test_bad_input_names_file_record_and_field(tmp_path):
    bad = [dict(ODVG_GROUNDING[0])]
    bad[0] = json.loads(json.dumps(bad[0]))
    bad[0]["grounding"]["regions"][1]["tokens_positive"] = [[36, 99]]
    _write_jsonl(tmp_path / "bad.json", bad)
    with pytest.raises(ValueError, match=r"bad.json: record 1: field 'tokens_positive'"):
        convert_dataset(["odvg2mdetr", str(tmp_path / "bad.json"), str(tmp_path / "out.json")])
    coco = json.loads(json.dumps(COCO))
    coco["annotations"][1]["category_id"] = 77
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"annotation id=2: field 'category_id' is 77"):
        convert_dataset(["coco2mdetr", str(tmp_path / "coco.json"), str(tmp_path / "out.json")])


def test_validation_failure_is_reported_with_an_explanation(tmp_path, caplog):
    """A converted file whose images are not where --image-root says: exit 1 and the explanation."""
    (tmp_path / "coco.json").write_text(json.dumps(COCO))
    caplog.set_level("INFO")
    rc = convert_dataset(["coco2mdetr", str(tmp_path / "coco.json"), str(tmp_path / "mdetr.json"),
                          "--image-root", str(tmp_path / "nowhere")])
    assert rc == 1
    assert "missing image" in caplog.text and "expected: the image file at" in caplog.text


def test_coco_conversion_trains_through_train_net(tmp_path, tiny_text_encoder):
    """COCO detection json -> MDETR json -> register_mdetr_json -> tools/train_net.py (3 its)."""
    from detectron2.engine import default_argument_parser

    from mdetr_d2.data import register_mdetr_json

    (tmp_path / "coco.json").write_text(json.dumps(COCO))
    _write_images(tmp_path / "images", COCO["images"])
    assert convert_dataset(["coco2mdetr", str(tmp_path / "coco.json"), str(tmp_path / "train.json"),
                            "--negatives", "1", "--image-root", str(tmp_path / "images"),
                            "--tokenizer", tiny_text_encoder]) == 0
    register_mdetr_json("converted_coco_tiny_train", str(tmp_path / "train.json"),
                        str(tmp_path / "images"))
    train_net = __import__("tools.train_net", fromlist=["main"])
    args = default_argument_parser().parse_args([
        "--config-file", "configs/synthetic/mdetr_synthetic.yaml",
        "MODEL.MDETR.TEXT_ENCODER.NAME", tiny_text_encoder, "OUTPUT_DIR", str(tmp_path / "out"),
        "DATASETS.TRAIN", "('converted_coco_tiny_train',)", "DATASETS.TEST", "()",
        "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "100",
    ])
    train_net.main(args)
    metrics = (tmp_path / "out" / "metrics.json").read_text().splitlines()
    rows = [json.loads(line) for line in metrics]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (tmp_path / "out" / "model_final.pth").is_file()
