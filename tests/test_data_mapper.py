"""MDETRDatasetMapper: output format, alignment under box filtering, masks, QA answers, D2 loaders."""

import json

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog, build_detection_train_loader
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, BoxMode, PolygonMasks
from PIL import Image

import mdetr_d2.data as D
from mdetr_d2.config import add_mdetr_config
from mdetr_d2.structures import create_positive_map, encode_clevr_answer, tensor_to_spans


@pytest.fixture(scope="module")
def tok_dir(official_fixtures):
    return str(official_fixtures / "tiny_roberta")


def _image(path, w, h):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def _record(tmp_path, w=80, h=60, **extra):
    caption = "the cat on the left and a red dog"
    rec = {
        "file_name": _image(tmp_path / "img.png", w, h),
        "height": h,
        "width": w,
        "image_id": 3,
        "caption": caption,
        "dataset_name": "refcoco",
        "original_id": 99,
        "annotations": [
            {
                "bbox": [2, 2, 10, 10],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 1,
                "tokens_positive": [[0, 7]],
                "isfinal": 1,
                "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]],
            },
            {
                "bbox": [50, 30, 20, 20],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 5,
                "tokens_positive": [[15, 19], [24, 33]],
                "isfinal": 0,
                "segmentation": [[50, 30, 70, 30, 70, 50, 50, 50]],
            },
            {
                "bbox": [60, 5, 10, 10],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 7,
                "tokens_positive": [[24, 33]],
                "isfinal": 0,
                "segmentation": [[60, 5, 70, 5, 70, 15, 60, 15]],
            },
        ],
    }
    rec.update(extra)
    return rec


def test_eval_output_format(tmp_path, tok_dir):
    rec = _record(tmp_path, tokens_positive_eval=[[[0, 7]], [[24, 33]]])
    mapper = D.MDETRDatasetMapper(
        False, augmentations=D.build_mdetr_augmentation("cautious", False), tokenizer_name=tok_dir
    )
    out = mapper(rec)
    assert out["image"].shape == (3, 800, 1066) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"], out["image_id"]) == (60, 80, 3)
    assert (
        out["caption"] == rec["caption"]
        and out["dataset_name"] == "refcoco"
        and out["original_id"] == 99
    )
    inst = out["instances"]
    assert inst.image_size == (800, 1066) and len(inst) == 3
    scale = torch.tensor([1066 / 80, 800 / 60] * 2)
    torch.testing.assert_close(inst.gt_boxes.tensor[1], torch.tensor([50.0, 30, 70, 50]) * scale)
    assert inst.gt_positive_map.shape == (3, 256) and inst.gt_positive_map.dtype == torch.float32
    assert inst.gt_classes.tolist() == [1, 5, 7] and inst.gt_isfinal.tolist() == [1.0, 0.0, 0.0]
    assert tensor_to_spans(inst.gt_tokens_positive) == [
        [[0, 7]],
        [[15, 19], [24, 33]],
        [[24, 33]],
    ]
    assert out["positive_map_eval"].dtype == torch.bool and out["positive_map_eval"].shape == (
        2,
        256,
    )
    assert torch.equal(out["positive_map_eval"][1], inst.gt_positive_map[2].bool())
    assert not hasattr(inst, "gt_masks") and "answers" not in out
    assert rec["annotations"][0]["bbox"] == [2, 2, 10, 10]  # input record untouched


def test_crop_filters_every_field_in_sync(tmp_path, tok_dir):
    rec = _record(tmp_path)
    # a fixed crop that loses the first box entirely and keeps the other two
    mapper = D.MDETRDatasetMapper(
        True, augmentations=[T.CropTransform(30, 0, 50, 60)], tokenizer_name=tok_dir, use_masks=True
    )
    inst = mapper(rec)["instances"]
    assert len(inst) == 2 and inst.image_size == (60, 50)
    torch.testing.assert_close(
        inst.gt_boxes.tensor, torch.tensor([[20.0, 30, 40, 50], [30, 5, 40, 15]])
    )
    assert tensor_to_spans(inst.gt_tokens_positive) == [[[15, 19], [24, 33]], [[24, 33]]]
    assert inst.gt_classes.tolist() == [5, 7] and inst.gt_isfinal.tolist() == [0.0, 0.0]
    full = D.MDETRDatasetMapper(False, augmentations=[], tokenizer_name=tok_dir)(rec)["instances"]
    assert torch.equal(inst.gt_positive_map, full.gt_positive_map[1:])
    assert isinstance(inst.gt_masks, BitMasks) and inst.gt_masks.tensor.shape == (2, 60, 50)
    assert inst.gt_masks.tensor[0, 35, 25] and not inst.gt_masks.tensor[0, 10, 5]
    # clamping before augmentation: a box half outside the image, and a zero-width box
    rec["annotations"][0]["bbox"] = [-10, -5, 20, 20]
    rec["annotations"][2]["bbox"] = [60, 5, 0, 10]
    inst = D.MDETRDatasetMapper(False, augmentations=[], tokenizer_name=tok_dir)(rec)["instances"]
    assert inst.gt_boxes.tensor[0].tolist() == [0.0, 0.0, 10.0, 15.0] and len(inst) == 2


def test_training_chain_and_polygon_masks(tmp_path, tok_dir):
    np.random.seed(0)
    rec = _record(tmp_path, w=400, h=300)
    mapper = D.MDETRDatasetMapper(
        True,
        augmentations=D.build_mdetr_augmentation("cautious", True),
        tokenizer_name=tok_dir,
        use_masks=True,
        mask_format="polygon",
    )
    for _ in range(3):
        out = mapper(rec)
        inst = out["instances"]
        h, w = out["image"].shape[1:]
        assert inst.image_size == (h, w) and 480 <= min(h, w) <= 800
        assert isinstance(inst.gt_masks, PolygonMasks) and len(inst.gt_masks) == len(inst)
        assert len(inst.gt_tokens_positive) == len(inst.gt_positive_map) == len(inst)


def test_text_aware_flip(tmp_path, tok_dir):
    rec = _record(tmp_path)
    mapper = D.MDETRDatasetMapper(
        True, augmentations=[D.TextAwareHFlip(prob=1.0)], tokenizer_name=tok_dir
    )
    out = mapper(rec)
    assert out["caption"] == "the cat on the right and a red dog"
    inst = out["instances"]
    assert tensor_to_spans(inst.gt_tokens_positive)[1] == [[15, 20], [25, 34]]
    assert out["caption"][25:34] == "a red dog"
    torch.testing.assert_close(inst.gt_boxes.tensor[0], torch.tensor([68.0, 2, 78, 12]))
    tok = mapper.tokenizer(out["caption"])
    expected = create_positive_map(tok, tensor_to_spans(inst.gt_tokens_positive))
    assert torch.equal(inst.gt_positive_map, expected)


def test_gqa_answers_match_official(official_fixtures, tok_dir):
    folder = official_fixtures / "gqa_eb0"
    records = D.load_mdetr_json(str(folder / "annotations.json"), str(official_fixtures / "images"))
    mapper = D.MDETRDatasetMapper(
        False, augmentations=[], tokenizer_name=tok_dir, qa_kind="gqa", gqa_answer_vocab=str(folder)
    )
    case = torch.load(folder / "case.pt", map_location="cpu", weights_only=True)
    outs = [mapper(r) for r in records]
    assert outs[0]["questionId"] == "q0" and outs[0]["question_type"] == "attr"
    for key, value in case["answers"].items():
        assert torch.equal(torch.stack([o["answers"][key] for o in outs]), value), key


def test_clevr_answers_and_isfinal_match_official(official_fixtures, tok_dir):
    folder = official_fixtures / "clevr_eb0"
    records = D.load_mdetr_json(str(folder / "annotations.json"), str(official_fixtures / "images"))
    mapper = D.MDETRDatasetMapper(False, augmentations=[], tokenizer_name=tok_dir, qa_kind="clevr")
    case = torch.load(folder / "case.pt", map_location="cpu", weights_only=True)
    outs = [mapper(r) for r in records]
    for key, value in case["answers"].items():
        assert torch.equal(torch.stack([o["answers"][key] for o in outs]), value), key
    for out, target in zip(outs, case["targets"]["main"]):
        assert torch.equal(out["instances"].gt_isfinal, target["isfinal"])
        assert torch.equal(out["instances"].gt_positive_map, (target["positive_map"] > 0).float())
    with pytest.raises(ValueError, match="CLEVR answer"):
        encode_clevr_answer("maybe")


def test_missing_image_and_captionless_records(tmp_path, tok_dir):
    mapper = D.MDETRDatasetMapper(False, augmentations=[], tokenizer_name=tok_dir)
    rec = _record(tmp_path)
    rec["file_name"] = str(tmp_path / "gone.jpg")
    with pytest.raises(D.BadRecordError, match=r"image_id=3.*gone\.jpg.*'file_name'.*not found"):
        mapper(rec)
    lvis = _record(tmp_path)
    del lvis["caption"]
    for a in lvis["annotations"]:
        del a["tokens_positive"]
    out = mapper(lvis)
    assert "caption" not in out and len(out["instances"]) == 3
    assert not out["instances"].has("gt_positive_map")


def test_from_config_and_train_loader(tmp_path, official_fixtures, tok_dir):
    images = tmp_path / "imgs"
    images.mkdir()
    gqa = json.loads((official_fixtures / "gqa_eb0" / "annotations.json").read_text())
    for entry in gqa["images"]:
        _image(images / entry["file_name"], entry["width"], entry["height"])
    gqa["images"][2]["height"] = 999  # a wrong json size: the image wins (warning)
    ann = tmp_path / "gqa.json"
    ann.write_text(json.dumps(gqa))
    D.register_mdetr_json(
        "test_data_mapper_gqa",
        str(ann),
        str(images),
        evaluator_type="gqa",
        gqa_answer_vocab=str(official_fixtures / "gqa_eb0" / "gqa_answer2id.json"),
    )
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.MODEL.MDETR.TEXT_ENCODER.NAME = tok_dir
    cfg.MODEL.MDETR.QA_HEAD = "gqa"
    cfg.DATASETS.TRAIN = ("test_data_mapper_gqa",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    mapper = D.MDETRDatasetMapper(cfg, is_train=True)
    assert mapper.qa_kind == "gqa" and mapper.gqa_answer_vocab_by_type.endswith(
        "gqa_answer2id_by_type.json"
    )
    assert MetadataCatalog.get("test_data_mapper_gqa").evaluator_type == "gqa"
    loader = build_detection_train_loader(cfg, mapper=mapper)
    batch = next(iter(loader))
    assert len(batch) == 2
    for item in batch:
        assert item["image"].dtype == torch.uint8 and item["instances"].has("gt_positive_map")
        assert set(item["answers"]) >= {"answer", "answer_type", "answer_obj", "answer_rel"}


def test_image_already_at_eval_size_is_left_as_is(tmp_path, tok_dir):
    # MDETR's resize returns a no-op for an image whose short side already equals the target; the
    # mapper must not mistake Detectron2's NoOpTransform for a caption-changing transform.
    rec = _record(tmp_path, w=100, h=80, tokens_positive_eval=[[[0, 7]]])
    mapper = D.MDETRDatasetMapper(
        True, augmentations=D.build_mdetr_augmentation("cautious", False, test_size=80),
        tokenizer_name=tok_dir,
    )
    out = mapper(rec)
    assert out["image"].shape == (3, 80, 100)
    assert out["caption"] == rec["caption"]
    assert tensor_to_spans(out["instances"].gt_tokens_positive)[0] == [[0, 7]]


def test_qa_answer_reaches_the_evaluators(tmp_path, tok_dir):
    """The raw answer string is in the mapper's output (the QA evaluators compare predictions with
    it); it used to be dropped, and GQA/CLEVR accuracy was never computed."""
    mapper = D.MDETRDatasetMapper(False, augmentations=[], tokenizer_name=tok_dir, qa_kind="clevr")
    out = mapper(_record(tmp_path, answer="yes", questionId="q7"))
    assert out["answer"] == "yes" and out["questionId"] == "q7"
    assert float(out["answers"]["answer_binary"]) == 1.0
