"""Export to TorchScript and ONNX (mdetr_d2.export, tools/export_model.py): the exported graphs give
the eager model's outputs on image sizes, batches and text lengths they were not traced on, the
runtime gives the eager model's Instances, and bad inputs get clear errors.

Targets (the issue's): raw logits within 1e-4, boxes within 1e-5 of the eager model of the same
backbone mode. TorchScript runs torch's own kernels: equal. onnxruntime computes in another
order; the EfficientNet fixtures' random weights amplify rounding (backbone activations near 1e4:
the eager model's own float32 logits are 1e-3 from float64), so there the bound is relative to
that float32 error (see _assert_close_to_eager).
"""
import argparse
import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

from mdetr_d2.checkpoint import CheckpointError, build_official_model
from mdetr_d2.export import ExportedMDETR, ExportError, export_mdetr
from mdetr_d2.export.exporter import TRACE_SIZES, raw_outputs, synthetic_image
from mdetr_d2.modeling.meta_arch import MDETR, feature_padding_mask, normalize_and_pad

_export_tool = __import__("tools.export_model", fromlist=["main"])

CASES = ("det_r18", "seg_eb0", "gqa_eb0", "clevr_eb0")
LOGITS_TOL, BOXES_TOL = 1e-4, 1e-5
# A padded batch of sizes never traced (TRACE_SIZES) whose first image ends exactly on a
# stride-32 cell boundary of the padded batch (150 = 5 * 210 / 7): onnxruntime's Resize rounded
# that cell the other way and grounded the first caption on padding.
SIZES = ((150, 190), (210, 120))
CAPTIONS = ("a man in a red shirt", "the cat")
_MODELS = {}


def _model(fixtures, case):
    if case not in _MODELS:
        _MODELS[case] = build_official_model(str(fixtures / case / "checkpoint.pth"),
                                             text_encoder=str(fixtures / "tiny_roberta"),
                                             device="cpu")
    return _MODELS[case]


def _batch(model, sizes=SIZES, captions=CAPTIONS):
    images = normalize_and_pad([synthetic_image(h, w, 20 + i) for i, (h, w) in enumerate(sizes)],
                               model.pixel_mean, model.pixel_std)
    return images.tensor, torch.tensor(images.image_sizes), MDETR.padding_mask(images), list(captions)


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def _assert_close_to_eager(model, exported, fmt, case):
    images, sizes, mask, captions = _batch(model)
    assert all(s not in TRACE_SIZES for s in SIZES)
    ours = exported.network(images, sizes, captions)
    ref = raw_outputs(model, images, mask, captions)
    assert set(ours) >= {"pred_logits", "pred_boxes"}
    diffs = {k: _max_diff(v, ref[k]) for k, v in ours.items()}
    if fmt == "torchscript" or case == "det_r18":
        bounds = {k: BOXES_TOL if k == "pred_boxes" else LOGITS_TOL for k in diffs}
    else:
        # No further from the eager model than 10x the eager model's own float32 error (its
        # distance from float64), or the target when that is larger.
        exact = raw_outputs(copy.deepcopy(model).double(), images.double(), mask, captions)
        bounds = {k: max(10 * _max_diff(ref[k], exact[k]),
                         BOXES_TOL if k == "pred_boxes" else LOGITS_TOL) for k in diffs}
    assert all(diffs[k] <= bounds[k] for k in diffs), (diffs, bounds)


def _assert_same_instances(ours, ref, box_tol):
    assert ours.image_size == ref.image_size and len(ours) == len(ref)
    assert _max_diff(ours.pred_boxes.tensor, ref.pred_boxes.tensor) <= box_tol
    assert _max_diff(ours.scores, ref.scores) <= 1e-5
    assert torch.equal(ours.pred_classes, ref.pred_classes)
    if ref.has("pred_spans"):
        assert torch.equal(ours.pred_spans, ref.pred_spans)
        assert list(ours.pred_phrases) == list(ref.pred_phrases)
    if ref.has("pred_masks"):
        assert torch.equal(ours.pred_masks, ref.pred_masks)


def test_feature_padding_mask_is_torch_nearest_interpolation():
    """The explicit float32 indices pick the cells F.interpolate(mode="nearest") picks."""
    torch.manual_seed(0)
    for size in range(1, 300):
        mask = torch.rand(2, size, 3) > 0.5
        for out in {1, -(-size // 32), -(-size // 16), -(-size // 4), size, 2 * size, size // 3 + 1}:
            ref = F.interpolate(mask[None].float(), size=(out, 3)).bool()[0]
            assert torch.equal(feature_padding_mask(mask, (out, 3)), ref), (size, out)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", CASES)
def test_exported_graphs_match_eager(official_fixtures, tmp_path, case, fmt):
    """Every fixture model (detection, segmentation, GQA, CLEVR with is-final), both formats, on
    a padded batch of untraced sizes and text lengths; TorchScript also through the runtime
    (Instances, masks, answers, class prompts)."""
    model = _model(official_fixtures, case)
    manifest = export_mdetr(model, str(tmp_path), fmt, check=False)
    exported = ExportedMDETR(str(tmp_path), num_threads=1)
    _assert_close_to_eager(model, exported, fmt, case)
    names = manifest["graphs"]["grounding"]["outputs"]
    assert ("pred_masks" in names) == (case == "seg_eb0")
    assert ("pred_isfinal" in names) == (case == "clevr_eb0")
    assert any(n.startswith("pred_answer") for n in names) == (case in ("gqa_eb0", "clevr_eb0"))
    if fmt != "torchscript":
        return
    inputs = [{"image": synthetic_image(h, w, 30 + i), "caption": c}
              for i, ((h, w), c) in enumerate(zip(SIZES, CAPTIONS))]
    inputs[1].update(height=420, width=240)  # results scaled to an original size
    inputs.append({"image": synthetic_image(100, 120, 40), "classes": ["dog", "red shirt", "man"]})
    with torch.no_grad():
        ref = model(inputs)
    ours = exported(inputs)
    for a, b in zip(ours[:2], ref[:2]):
        _assert_same_instances(a["instances"], b["instances"], 1e-3)
        assert a.get("qa") == b.get("qa")
    for key in ("instances", "all_instances"):
        _assert_same_instances(ours[2][key], ref[2][key], 1e-3)


@pytest.fixture(scope="module")
def class_prompt_export(official_fixtures, tmp_path_factory):
    """det_r18 exported to ONNX through the tool, configured for joined class prompts."""
    folder = tmp_path_factory.mktemp("export_onnx")
    opts = ["MODEL.MDETR.CLASS_PROMPTS.NAMES", "['dog', 'man in red', 'small cat']",
            "MODEL.MDETR.CLASS_PROMPTS.STYLE", "joined"]
    fixtures = official_fixtures
    assert _export_tool.main([
        "--official", str(fixtures / "det_r18" / "checkpoint.pth"),
        "--text-encoder", str(fixtures / "tiny_roberta"), "--format", "onnx",
        "--export-method", "tracing", "--output", str(folder),
        "--sample-image", str(fixtures / "images" / "img0.png"), *opts,
    ]) == 0
    cfg = _export_tool.setup_cfg(argparse.Namespace(
        official=str(fixtures / "det_r18" / "checkpoint.pth"),
        text_encoder=str(fixtures / "tiny_roberta"), exact_backbone=False, opts=opts))
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    _export_tool.load_export_weights(cfg, model)
    return folder, model


def test_tool_onnx_class_prompts_match_eager(class_prompt_export):
    """The user's path: tools/export_model.py --format onnx on an official checkpoint with a
    class-prompt config (fast backbone by default); the runtime detects the configured classes
    (an input without a caption) and grounds captions as the eager model of the same config."""
    folder, model = class_prompt_export
    exported = ExportedMDETR(str(folder), num_threads=1)
    manifest = exported.manifest
    assert manifest["format"] == "onnx" and manifest["model"]["backbone_fast_path"]
    assert model.backbone.fast
    assert manifest["check"]["pred_logits"] <= LOGITS_TOL
    assert manifest["check"]["pred_boxes"] <= BOXES_TOL
    inputs = [{"image": synthetic_image(150, 190, 50)},
              {"image": synthetic_image(120, 170, 51), "caption": "the small cat"}]
    with torch.no_grad():
        ref = model(inputs)
    ours = exported(inputs)
    for key in ("instances", "all_instances"):
        _assert_same_instances(ours[0][key], ref[0][key], 1e-3)
    assert len(ours[0]["all_instances"]) == 10  # one joined prompt x 10 queries
    _assert_same_instances(ours[1]["instances"], ref[1]["instances"], 1e-3)


def test_bad_inputs_get_clear_errors(class_prompt_export, tmp_path):
    folder, _ = class_prompt_export
    exported = ExportedMDETR(str(folder), num_threads=1)
    with pytest.raises(ValueError, match=r"image 0: expected a C×H×W tensor with 3 channels.*"
                                         r"\(4, 64, 64\)"):
        exported([{"image": torch.zeros(4, 64, 64), "caption": "a dog"}])
    with pytest.raises(ValueError, match=r"text_encoder\.onnx.* accepts at most 512"):
        exported([{"image": synthetic_image(64, 64, 0), "caption": "dog " * 600}])
    # A graph file of another export (other weights) next to this manifest.
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    grounding = mixed / "grounding.onnx"
    grounding.write_bytes(grounding.read_bytes()[:-1] + b"\0")
    with pytest.raises(ExportError, match=r"grounding\.onnx: not the grounding graph exported "
                                          r"with .*manifest\.json"):
        ExportedMDETR(str(mixed))
    with pytest.raises(ExportError, match="no manifest.json"):
        ExportedMDETR(str(tmp_path))


def test_tool_refuses_weights_of_another_model(official_fixtures, tmp_path):
    fixtures = official_fixtures
    base = ["--official", str(fixtures / "det_r18" / "checkpoint.pth"), "--text-encoder",
            str(fixtures / "tiny_roberta"), "--output", str(tmp_path)]
    # A checkpoint of another architecture (EfficientNet QA model into the ResNet detector).
    other = str(fixtures / "gqa_eb0" / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="gqa_eb0/checkpoint.pth"):
        _export_tool.main(base + ["MODEL.WEIGHTS", other])
    # A config with a head the checkpoint does not have: never exported at random init.
    with pytest.raises(CheckpointError, match=r"det_r18/checkpoint.pth: 2 weight\(s\) of the "
                                              r"model are not in the file.*isfinal_embed"):
        _export_tool.main(base + ["MODEL.MDETR.PREDICT_FINAL", "True"])
    assert not (tmp_path / "manifest.json").exists()
