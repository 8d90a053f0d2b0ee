"""MDETR augmentations: the exact resize rule, the box-respecting crop, the chains, the text-aware flip."""

import json

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from PIL import Image

from mdetr_d2.data import (
    MDETRResize,
    RandomSelect,
    RandomSizeCrop,
    build_augmentation_from_config,
    build_mdetr_augmentation,
    mdetr_resize_shape,
)
from mdetr_d2.config import add_mdetr_config
from mdetr_d2.data.transforms import swap_left_right


def test_eval_resize_table_matches_official(official_fixtures):
    table = json.loads((official_fixtures / "transforms" / "eval_resize_table.json").read_text())
    assert len(table["rows"]) == 16
    (aug,) = build_mdetr_augmentation("cautious", is_train=False)
    for row in table["rows"]:
        w, h = row["input_wh"]
        assert mdetr_resize_shape(h, w, 800, 1333) == (
            row["output_wh"][1],
            row["output_wh"][0],
        ), row
        aug_input = T.AugInput(
            np.zeros((h, w, 3), np.uint8), boxes=np.asarray(row["boxes_xyxy_in"], float)
        )
        aug(aug_input)
        assert aug_input.image.shape[:2] == tuple(row["target_size_hw"])
        np.testing.assert_allclose(aug_input.boxes, row["boxes_xyxy_out"], rtol=1e-6, atol=1e-4)
    # the two quirky rows, spelled out
    assert mdetr_resize_shape(200, 1333, 800, 1333) == (200, 1333)
    assert mdetr_resize_shape(100, 2000, 800, 1333) == (67, 1340)


def test_eval_resize_pixels(official_fixtures):
    folder = official_fixtures / "transforms"
    src = np.asarray(Image.open(folder / "resize_src_1000x750.png").convert("RGB"))
    ref = np.asarray(Image.open(folder / "resize_out_1066x800.png").convert("RGB")).astype(int)
    (aug,) = build_mdetr_augmentation("cautious", is_train=False)
    out = T.AugInput(src.copy())
    aug(out)
    diff = np.abs(out.image.astype(int) - ref)
    assert (
        out.image.shape == ref.shape and diff.max() <= 1
    )  # README: other Pillow versions may differ by 1


def test_random_size_crop_keeps_boxes():
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        boxes = np.asarray([[10, 10, 60, 60], [500, 300, 560, 380]], float)
        crop = RandomSizeCrop(384, 1333)
        for _ in range(20):
            tfm = crop.get_transform(np.zeros((600, 800, 3), np.uint8), boxes)
            assert 384 <= tfm.w <= 800 and 384 <= tfm.h <= 600
            # no box lost = each box keeps a positive area inside the window
            assert tfm.x0 < 60 and tfm.y0 < 60 and tfm.x0 + tfm.w > 500 and tfm.y0 + tfm.h > 300
        # impossible to keep both: the last try is accepted anyway
        far = np.asarray([[0, 0, 5, 5], [795, 595, 800, 600]], float)
        tfm = RandomSizeCrop(384, 400, max_tries=5).get_transform(
            np.zeros((600, 800, 3), np.uint8), far
        )
        assert tfm.w <= 400
        # an image side below min_size uses the whole side instead of failing
        tfm = RandomSizeCrop(384, 1333).get_transform(np.zeros((100, 800, 3), np.uint8), None)
        assert tfm.h == 100
    finally:
        np.random.set_state(rng_state)


def test_training_chains_sizes():
    np.random.seed(1)
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = np.asarray([[100, 100, 200, 200]], float)
    augs = T.AugmentationList(build_mdetr_augmentation("cautious", is_train=True))
    seen_shorts = set()
    for _ in range(20):
        inp = T.AugInput(image, boxes=boxes)
        augs(inp)
        h, w = inp.image.shape[:2]
        seen_shorts.add(min(h, w))
        assert min(h, w) in range(480, 801, 32) or max(h, w) <= 1333 + 10
        assert inp.boxes[0, 2] > inp.boxes[0, 0]
    assert len(seen_shorts) > 2
    clevr = T.AugmentationList(build_mdetr_augmentation("clevr", is_train=True))
    for _ in range(10):
        inp = T.AugInput(np.zeros((320, 480, 3), np.uint8), boxes=boxes)
        clevr(inp)
        short, long = sorted(inp.image.shape[:2])
        assert short <= 384 and long <= 512 + 1  # capped: short side round(512*s/l), long floored
    assert build_mdetr_augmentation("clevr", is_train=False) == []  # CLEVR evaluates at native size
    with pytest.raises(ValueError, match="unknown MDETR augmentation kind"):
        build_mdetr_augmentation("fancy")


def test_random_select_branches():
    a, b = MDETRResize([100]), MDETRResize([50])
    sel = RandomSelect([a], [b], prob=1.0)
    inp = T.AugInput(np.zeros((200, 300, 3), np.uint8))
    sel(inp)
    assert inp.image.shape[:2] == (100, 150)
    sel = RandomSelect([a], [b], prob=0.0)
    inp = T.AugInput(np.zeros((200, 300, 3), np.uint8))
    sel(inp)
    assert inp.image.shape[:2] == (50, 75)


def test_config_keys_build_chain():
    cfg = get_cfg()
    add_mdetr_config(cfg)
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False
    (sel,) = build_augmentation_from_config(cfg, True)
    assert isinstance(sel, RandomSelect) and sel.first.augs[0].scales[-1] == 800
    assert build_augmentation_from_config(cfg, False)[0].scales == (800,)
    cfg.INPUT.MDETR.KIND = "clevr"
    assert build_augmentation_from_config(cfg, False) == []
    cfg.INPUT.MDETR.TEXT_AWARE_FLIP = True
    cfg.INPUT.MDETR.SCALES = [300]
    flip, sel = build_augmentation_from_config(cfg, True)
    assert sel.first.augs[0].scales == (300,) and sel.first.augs[0].max_size == 512


def test_swap_left_right_rederives_spans():
    caption = "the left dog and the bright cat on the Right side, leftmost"
    spans = [[[0, 8]], [[4, 8]], [[21, 31]], [[39, 44]], [[51, 59]], [[45, 49]]]
    new, moved = swap_left_right(caption, spans)
    assert new == "the right dog and the bright cat on the Left side, rightmost"
    texts = [[new[b:e] for b, e in group] for group in moved]
    assert texts == [["the right"], ["right"], ["bright cat"], ["Left"], ["rightmost"], ["side"]]
    unchanged, same = swap_left_right("no direction here", [[[0, 2]]])
    assert unchanged == "no direction here" and same == [[[0, 2]]]
