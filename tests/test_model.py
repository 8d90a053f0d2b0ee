"""The MDETR model on small local parts: inference outputs, predictor, backbones, text limits."""
import logging

import numpy as np
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

from mdetr_d2.modeling.backbone import FrozenBatchNormAct2d, MDETREfficientNet, MDETRResNet
from mdetr_d2.predictor import MDETRPredictor

from .conftest import tiny_mdetr_cfg


def _image(h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (3, h, w)).astype("float32"))


@pytest.fixture(scope="module")
def predictor(tiny_text_encoder):
    torch.manual_seed(0)
    return MDETRPredictor(tiny_mdetr_cfg(tiny_text_encoder))


@pytest.fixture(scope="module")
def tiny_model(tiny_text_encoder):
    torch.manual_seed(0)
    return build_model(tiny_mdetr_cfg(tiny_text_encoder)).eval()


def test_inference_outputs_are_detectron2_instances(tiny_model):
    inputs = [
        {"image": _image(64, 80), "caption": "the cat on the left", "height": 128, "width": 160},
        {"image": _image(72, 48, 1), "caption": "a man in a red shirt holds a small dog .", "height": 72,
         "width": 48},
    ]
    with torch.no_grad():
        outputs = tiny_model(inputs)
    assert len(outputs) == 2
    for x, out in zip(inputs, outputs):
        inst = out["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) == 5
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0::2] >= -1e-4).all() and (boxes[:, 0::2] <= x["width"] + 1e-3).all()
        assert (boxes[:, 1::2] >= -1e-4).all() and (boxes[:, 1::2] <= x["height"] + 1e-3).all()
        torch.testing.assert_close(inst.scores, 1 - inst.token_probs[:, -1])
        torch.testing.assert_close(inst.token_probs.sum(-1), torch.ones(5))
        for (beg, end), phrase in zip(inst.pred_spans.tolist(), inst.pred_phrases):
            assert 0 <= beg < end <= len(x["caption"])
            assert phrase == x["caption"][beg:end]
    # Instances with phrase fields still index like any Detectron2 Instances.
    top = outputs[0]["instances"][outputs[0]["instances"].scores > 0]
    assert len(top.pred_phrases) == len(top)


def test_batched_padding_does_not_change_unpadded_image_much(tiny_model):
    # The padding changes ResNet borders (as in the official code), but the batch runs and keeps order.
    a = {"image": _image(64, 64), "caption": "the cat on the left", "height": 64, "width": 64}
    b = {"image": _image(96, 64, 1), "caption": "a small dog", "height": 96, "width": 64}
    with torch.no_grad():
        alone = tiny_model([b])[0]["instances"]
        both = tiny_model([a, b])[1]["instances"]
    torch.testing.assert_close(alone.pred_boxes.tensor, both.pred_boxes.tensor, atol=1e-4, rtol=0)


def test_encoded_text_can_be_reused(tiny_model):
    images = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    captions = ["the small red circle left of the blue square", "the cat on the left"]
    with torch.no_grad():
        direct = tiny_model.forward_network(images, mask, captions)
        text = tiny_model.encode_text(captions)
        cached = tiny_model.forward_network(images, mask, text)
        swapped = tiny_model.forward_network(images.flip(0), mask, text.index_select(torch.tensor([1, 0])))
    torch.testing.assert_close(direct["pred_logits"], cached["pred_logits"])
    torch.testing.assert_close(direct["pred_boxes"][0], swapped["pred_boxes"][1], atol=1e-5, rtol=0)


def test_empty_caption_is_refused(tiny_model):
    with pytest.raises(ValueError, match="caption 1 is empty"):
        tiny_model.encode_text(["a dog", "   "])


def test_caption_beyond_token_slots_warns_with_positions(tiny_model, caplog):
    caption = " ".join(["the small red circle"] * 80)  # > 255 tokens, < 512
    with caplog.at_level(logging.WARNING):
        tokenized = tiny_model.text_encoder.tokenize([caption], torch.device("cpu"))
    length = tokenized["input_ids"].shape[1]
    assert length > 256
    assert f"positions 255..{length - 1}" in caplog.text


def test_caption_beyond_text_encoder_positions_is_refused(tiny_model):
    with pytest.raises(ValueError, match="accepts at most 512"):
        tiny_model.text_encoder.tokenize([" ".join(["circle"] * 600)], torch.device("cpu"))


@pytest.mark.parametrize("depth, channels", [(18, 512), (34, 512), (50, 2048)])
def test_resnet_backbones_follow_mdetr(depth, channels):
    backbone = MDETRResNet(depth=depth, freeze_at=2)
    assert backbone.output_shape()["res5"].channels == channels
    assert backbone.size_divisibility == 0
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    trainable = [n for n, p in backbone.named_parameters() if p.requires_grad]
    assert all(n.startswith(("body.conv1", "body.layer1")) for n in frozen) and frozen
    assert all(n.startswith(("body.layer2", "body.layer3", "body.layer4")) for n in trainable)
    bns = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert bns and all(m.eps == 1e-5 for m in bns)
    # Stride on the 3x3 conv (torchvision layout), as the released weights expect.
    if depth == 50:
        assert backbone.body.layer2[0].conv2.stride == (2, 2) and backbone.body.layer2[0].conv1.stride == (1, 1)


def test_efficientnet_keeps_activation_after_frozen_bn():
    backbone = MDETREfficientNet(variant="b0")
    frozen = [m for m in backbone.modules() if isinstance(m, FrozenBatchNormAct2d)]
    assert frozen and all(m.eps == 1e-5 for m in frozen)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    acts = {type(m.act).__name__ for m in frozen}
    assert acts == {"SiLU", "Identity"}  # SiLU where timm 0.4 had bn+act, none after projections
    assert backbone.body.bn1.act.__class__.__name__ == "SiLU"
    out = backbone(torch.randn(1, 3, 65, 71))  # odd sizes: TF "SAME" padding
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(17, 18), (9, 9), (5, 5), (3, 3)]


def test_segmentation_head_derives_channels_from_resnet18(tiny_text_encoder):
    # The official head hard-codes ResNet-50 channels and crashes with R18; ours reads the backbone.
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{"MODEL.MDETR.MASKS": True,
                                               "MODEL.MDETR.CONTRASTIVE_ALIGN_LOSS": False,
                                               "MODEL.MDETR.HIDDEN_DIM": 128, "MODEL.MDETR.NHEADS": 8})
    model = build_model(cfg).eval()
    assert model.mask_head.adapter1.in_channels == 256  # R18 res4
    with torch.no_grad():
        out = model([{"image": _image(64, 96), "caption": "the cat", "height": 32, "width": 48}])
    masks = out[0]["instances"].pred_masks
    assert masks.shape == (5, 32, 48) and masks.dtype == torch.bool


def test_qa_and_isfinal_outputs(tiny_text_encoder):
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{"MODEL.MDETR.QA_HEAD": "clevr",
                                               "MODEL.MDETR.PREDICT_FINAL": True})
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model([{"image": _image(64, 64), "caption": "what color is the large sphere ?"}])[0]
    assert out["qa"]["answer_type"] in ("binary", "attribute", "number")
    assert isinstance(out["qa"]["answer"], str)
    inst = out["instances"]
    assert torch.all(inst.scores_refexp <= inst.scores + 1e-6)


def test_predictor_formats_and_many_captions(tiny_text_encoder):
    torch.manual_seed(0)
    predictor = MDETRPredictor(tiny_mdetr_cfg(tiny_text_encoder))
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3)).astype(np.uint8)
    out_bgr = predictor(rgb[:, :, ::-1].copy(), "the cat on the left")["instances"]
    rgb_predictor = MDETRPredictor.__new__(MDETRPredictor)
    rgb_predictor.__dict__.update(predictor.__dict__, image_format="RGB")
    out_rgb = rgb_predictor(rgb, "the cat on the left")["instances"]
    torch.testing.assert_close(out_bgr.pred_boxes.tensor, out_rgb.pred_boxes.tensor)
    assert out_bgr.image_size == (50, 70)

    captions = ["the cat on the left", "a small dog", "the blue square"]
    many = predictor.predict_captions(rgb[:, :, ::-1].copy(), captions)
    one_by_one = [predictor(rgb[:, :, ::-1].copy(), c) for c in captions]
    for a, b in zip(many, one_by_one):
        torch.testing.assert_close(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor,
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores, atol=1e-5, rtol=0)
    batch = predictor.predict_batch([rgb, rgb[:40]], ["a small dog", "the cat"])
    assert [o["instances"].image_size for o in batch] == [(50, 70), (40, 70)]


_RGB = np.random.default_rng(0).integers(0, 255, (50, 70, 3)).astype(np.uint8)


@pytest.mark.parametrize("call, pattern", [
    (lambda p: p(_RGB / 255.0, "a dog"), r"image: float pixel values in 0\.\.0\.99\d* look like "
                                         r"a 0\.\.1 image; expected 0\.\.255"),
    (lambda p: p(np.where(_RGB > 128, np.nan, _RGB.astype(np.float32)), "a dog"), "NaN"),
    (lambda p: p(_RGB * 2.0, "a dog"), r"must lie in 0\.\.255, got 0\.\.508"),
    (lambda p: p(_RGB.astype(np.int64), "a dog"), r"uint8 \(or float, 0\.\.255\).*dtype int64"),
    (lambda p: p(_RGB.astype(np.uint16), "a dog"), "dtype uint16"),
    (lambda p: p(_RGB > 128, "a dog"), "dtype bool"),
    (lambda p: p(torch.from_numpy(_RGB), "a dog"), "H×W×3 array, got Tensor"),
    (lambda p: p(_RGB.tolist(), "a dog"), "H×W×3 array, got list"),
    (lambda p: p(np.zeros((0, 0, 3), np.uint8), "a dog"), "a non-empty image, got size 0×0"),
    # No caption and no class list in the config: the model says how to give one.
    (lambda p: p(_RGB, None), "has no 'caption' and no class list"),
    (lambda p: p(_RGB, classes=["a dog", 3]), "class name 1: expected a str, got int"),
    (lambda p: p(_RGB, b"a dog"), r"caption: expected a str, got bytes \(decode it to str\)"),
    (lambda p: p(_RGB, " "), "caption: is empty"),
    (lambda p: p.predict_captions(_RGB, []), "expected a non-empty list of captions"),
    (lambda p: p.predict_captions(_RGB, "a dog"), "expected a list of captions, got str"),
    (lambda p: p.predict_captions(_RGB, ["a dog", None]), "caption 1: expected a str"),
    (lambda p: p.predict_batch([], []), "expected a non-empty list of images"),
    (lambda p: p.predict_batch([_RGB, _RGB[:, :, 0]], ["a", "b"]), r"image 1: .*shape \(50, 70\)"),
])
def test_predictor_refuses_wrong_inputs_saying_what_it_expects(predictor, call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(predictor)


def test_predictor_takes_float_images_in_pixel_units(predictor):
    as_uint8 = predictor(_RGB, "a dog")["instances"]
    as_float = predictor(_RGB.astype(np.float32), "a dog")["instances"]
    # Only the resize's interpolation differs (Detectron2 resamples float images with torch).
    torch.testing.assert_close(as_float.pred_boxes.tensor, as_uint8.pred_boxes.tensor,
                               atol=0.05, rtol=0)


def test_scratch_resnet_trains_its_norm_layers(tiny_text_encoder):
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{
        "MODEL.BACKBONE.NAME": "build_mdetr_scratch_resnet_backbone", "MODEL.BACKBONE.FREEZE_AT": 0,
        "MODEL.RESNETS.NORM": "BN", "MODEL.RESNETS.STEM_OUT_CHANNELS": 16,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 16})
    model = build_model(cfg)
    assert model.backbone.output_shape()["res5"].channels == 128
    assert model.backbone.output_shape()["res5"].stride == 32
    bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.weight.requires_grad for m in bn)
    with torch.no_grad():
        out = model.eval()([{"image": _image(64, 64), "caption": "the cat"}])
    assert len(out[0]["instances"]) == 5


def test_scratch_resnet_can_stop_at_res4_and_feed_the_transformer(tiny_text_encoder):
    overrides = {
        "MODEL.BACKBONE.NAME": "build_mdetr_scratch_resnet_backbone", "MODEL.BACKBONE.FREEZE_AT": 0,
        "MODEL.RESNETS.NORM": "BN", "MODEL.RESNETS.STEM_OUT_CHANNELS": 8,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 8, "MODEL.RESNETS.SCRATCH_LAST_LEVEL": "res4"}
    model = build_model(tiny_mdetr_cfg(tiny_text_encoder, **overrides))
    assert set(model.backbone.output_shape()) == {"res4"}
    assert not hasattr(model.backbone, "res5")  # the stage is not built, not just unused
    assert model.in_feature == "res4" and model.input_proj.in_channels == 32
    image = model.encode_image(torch.randn(1, 3, 64, 96), torch.zeros(1, 64, 96, dtype=torch.bool))
    assert image.projected.shape[-2:] == (4, 6)  # stride 16
    with torch.no_grad():
        out = model.eval()([{"image": _image(64, 64), "caption": "the cat"}])
    assert len(out[0]["instances"]) == 5
    with pytest.raises(ValueError, match="SCRATCH_LAST_LEVEL"):
        build_model(tiny_mdetr_cfg(tiny_text_encoder, **overrides, **{"MODEL.MDETR.MASKS": True,
                                                             "MODEL.MDETR.CONTRASTIVE_ALIGN_LOSS": False}))


def test_reordered_encoded_text_ties_boxes_to_the_right_caption(tiny_model):
    captions = ["the small red circle left of the blue square", "the cat"]
    text = tiny_model.encode_text(captions).index_select(torch.tensor([1, 0]))
    assert text.tokenized["input_ids"][0].tolist()[:4] == tiny_model.encode_text(["the cat"]).tokenized[
        "input_ids"][0].tolist()[:4]
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outputs = tiny_model.decode(tiny_model.encode(images, torch.zeros(2, 64, 64, dtype=torch.bool), text))
    from mdetr_d2.modeling.postprocessing import detections_to_instances

    inst = detections_to_instances(outputs, 0, (64, 64), (64, 64), (64, 64), "the cat")
    assert all(0 <= b < e <= len("the cat") for b, e in inst.pred_spans.tolist())
