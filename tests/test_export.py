"""Export to TorchScript and ONNX (mdetr_d2.export, tools/export_model.py): the exported graphs give
the eager model's outputs on image sizes, batches and text lengths they were not traced on, the
runtime gives the eager model's Instances, and bad inputs get clear errors.

Targets (the issue's): raw logits within 1e-4, boxes within 1e-5 of the eager model of the same
backbone mode. TorchScript runs torch's own kernels: equal. onnxruntime computes in another
order; the EfficientNet fixtures' random weights amplify rounding (the eager model's own float32
logits are up to 5e-3 from float64), so there no other float32 implementation can meet the targets
and the bound is relative to that float32 error (see _assert_close_to_eager). What can be asked,
and is checked, is that the exported image encoder is as accurate as eager's (against float64):
onnxruntime's multi-axis ReduceMean was not (the exporter's ``_mean_axis_by_axis``). The same
architectures with trained-like activation scales meet the targets in both formats
(test_conditioned_efficientnet_meets_targets); no onnxruntime optimization level makes the random
fixtures meet them (measured by hand: logits 2.6e-4 to 6.7e-3 from eager, ORT_DISABLE_ALL to ALL).
"""
import copy
import shutil

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import META_ARCH_REGISTRY, build_model

from mdetr_d2.checkpoint import CheckpointError
from mdetr_d2.export import ExportedMDETR, ExportError
from mdetr_d2.export.exporter import TRACE_SIZES, raw_outputs, synthetic_image
from mdetr_d2.export.graphs import ImageEncoderGraph
from mdetr_d2.modeling.meta_arch import MDETR, feature_padding_mask, normalize_and_pad

_export_tool = __import__("tools.export_model", fromlist=["main"])

CASES = ("det_r18", "seg_eb0", "gqa_eb0", "clevr_eb0")
LOGITS_TOL, BOXES_TOL = 1e-4, 1e-5
# Sizes never traced (TRACE_SIZES), checked one image at a time and as one padded batch. In the
# batch the first image ends exactly on a stride-32 cell boundary (150 = 5 * 210 / 7):
# onnxruntime's Resize rounded that cell the other way and grounded the first caption on padding.
SIZES = ((150, 190), (210, 120))
CAPTIONS = ("a man in a red shirt", "the cat")


@pytest.fixture(autouse=True)
def _one_thread():
    """Eager torch on one thread, as the exported runtimes here: float32 rounding, which the
    EfficientNet bounds measure, then depends on the kernels, not on the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tool_export(fixtures, case, fmt, folder, flags=(), opts=()):
    """tools/export_model.py on a fixture checkpoint (as a user runs it), then the runtime of the
    export and the eager model of the same config and weights (the tool's own builder)."""
    argv = ["--official", str(fixtures / case / "checkpoint.pth"), "--text-encoder",
            str(fixtures / "tiny_roberta"), "--format", fmt, "--export-method", "tracing",
            "--output", str(folder), *flags, *opts]
    assert _export_tool.main(argv) == 0
    model = _export_tool.build_export_model(_export_tool.setup_cfg(_export_tool.parse_args(argv)))
    return ExportedMDETR(str(folder), num_threads=1), model


def _batch(model, sizes, captions):
    images = normalize_and_pad([synthetic_image(h, w, 20 + i) for i, (h, w) in enumerate(sizes)],
                               model.pixel_mean, model.pixel_std)
    sizes = torch.tensor(images.image_sizes)
    return images.tensor, sizes, MDETR.padding_mask(images), list(captions)


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def _assert_close_to_eager(model, exported, relative=False):
    """Raw outputs of each untraced size alone and of both as a padded batch within the targets
    (``relative``: or within 10x the eager model's own float32 error on this checkpoint, the
    largest over the inputs; see the module docstring)."""
    assert all(s not in TRACE_SIZES for s in SIZES)
    model64 = copy.deepcopy(model).double() if relative else None
    checked = []
    for sizes in ((SIZES[0],), (SIZES[1],), SIZES):
        images, image_sizes, mask, captions = _batch(model, sizes, CAPTIONS[:len(sizes)])
        ours = exported.network(images, image_sizes, captions)
        ref = raw_outputs(model, images, mask, captions)
        assert set(ours) >= {"pred_logits", "pred_boxes"}
        diffs = {k: _max_diff(v, ref[k]) for k, v in ours.items()}
        errors = {}
        if relative:  # the eager model's own float32 error: its distance from float64
            exact = raw_outputs(model64, images.double(), mask, captions)
            errors = {k: _max_diff(ref[k], exact[k]) for k in diffs}
        checked.append((sizes, diffs, errors))
    # One input's eager error can be small by chance where onnxruntime's rounding is not (seen:
    # 3e-4 vs 9e-3 on one seg_eb0 image with 2 threads), so the bound uses the checkpoint's
    # largest over the inputs.
    worst = {k: max(e.get(k, 0.0) for _, _, e in checked) for k in checked[0][1]}
    for sizes, diffs, _ in checked:
        bounds = {k: max(10 * worst[k], BOXES_TOL if k == "pred_boxes" else LOGITS_TOL)
                  for k in diffs}
        assert all(diffs[k] <= bounds[k] for k in diffs), (sizes, diffs, bounds)


def _assert_image_encoder_as_accurate_as_eager(model, exported):
    """The exported image encoder's outputs on the padded batch of ``SIZES`` no further from the
    float64 model's than 1.5x the eager float32 model's own distance. onnxruntime's ReduceMean
    over H×W at once (the EfficientNet squeeze-excite pooling) put every level 1.7-3.2x further
    on this batch; one mean per axis: 0.9-1.1x. (One-image inputs did not show it.)"""
    images, image_sizes, _, _ = _batch(model, SIZES, CAPTIONS)
    ours = exported.encode_images(images, image_sizes)
    with torch.no_grad():
        ref = ImageEncoderGraph(model)(images, image_sizes)
        exact = ImageEncoderGraph(copy.deepcopy(model).double())(images.double(), image_sizes)
    ratios = {k: _max_diff(v, exact[k]) / _max_diff(ref[k], exact[k]) for k, v in ours.items()
              if v.is_floating_point() and k != "image_pos"}  # image_pos: exact in float32
    assert max(ratios.values()) <= 1.5, ratios


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
        strides = {-(-size // 32), -(-size // 16), -(-size // 4)}
        for out in {1, *strides, size, 2 * size, size // 3 + 1}:
            ref = F.interpolate(mask[None].float(), size=(out, 3)).bool()[0]
            assert torch.equal(feature_padding_mask(mask, (out, 3)), ref), (size, out)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("case", CASES)
def test_exported_graphs_match_eager(official_fixtures, tmp_path, case, fmt):
    """Every fixture model (detection, segmentation, GQA, CLEVR with is-final), both formats,
    exported with tools/export_model.py, on two untraced image sizes alone and as a padded batch;
    TorchScript also through the runtime (Instances, masks, answers, class prompts)."""
    exported, model = _tool_export(official_fixtures, case, fmt, tmp_path)
    manifest = exported.manifest
    _assert_close_to_eager(model, exported, relative=fmt == "onnx" and case != "det_r18")
    if fmt == "onnx" and case != "det_r18":
        _assert_image_encoder_as_accurate_as_eager(model, exported)
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


def _condition_efficientnet(model):
    """Give a random-weight EfficientNet backbone the activation scale of a trained one, in
    place: each residual block's last BN scale x0.3 (trained residual branches are damped; timm's
    ``zero_init_last`` sets it to 0), then every frozen BN's statistics set, in forward order, to
    its input's channel mean and variance on four synthetic 160x160 images. The fixtures' own
    statistics do not carry over to other inputs: their stride-32 features reach |x| ~ 200."""
    body = model.backbone.body
    residual = [b for stage in body.blocks for b in stage if getattr(b, "has_skip", False)]
    assert len(residual) == 9  # EfficientNet-B0: 16 blocks, 7 of them open a stage
    for block in residual:
        (block.bn3 if hasattr(block, "bn3") else block.bn2).weight.mul_(0.3)

    def set_statistics(bn, args):
        bn.running_mean.copy_(args[0].mean((0, 2, 3)))
        bn.running_var.copy_(args[0].var((0, 2, 3), unbiased=False))

    hooks = [m.register_forward_pre_hook(set_statistics) for m in body.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    images = torch.stack([synthetic_image(160, 160, 70 + i) for i in range(4)])
    with torch.no_grad():
        model.backbone((images - model.pixel_mean) / model.pixel_std)
    for hook in hooks:
        hook.remove()


@pytest.mark.parametrize("case, fmt", [("seg_eb0", "torchscript"), ("seg_eb0", "onnx"),
                                       ("gqa_eb0", "onnx"), ("clevr_eb0", "onnx")])
def test_conditioned_efficientnet_meets_targets(official_fixtures, tmp_path, case, fmt):
    """The EfficientNet fixtures' architectures with trained-like activation scales
    (:func:`_condition_efficientnet`), fine-tuned weights saved by Detectron2's checkpointer and
    exported with tools/export_model.py: the eager float32 model is within the targets of float64,
    and so is the export of eager, on untraced sizes and a padded batch, with onnxruntime's default
    optimizations. The random fixtures miss them only through their conditioning."""
    from detectron2.checkpoint import DetectionCheckpointer

    argv = ["--official", str(official_fixtures / case / "checkpoint.pth"), "--text-encoder",
            str(official_fixtures / "tiny_roberta"), "--format", fmt, "--output", "unused"]
    model = _export_tool.build_export_model(_export_tool.setup_cfg(_export_tool.parse_args(argv)))
    _condition_efficientnet(model)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("conditioned")
    exported, model = _tool_export(official_fixtures, case, fmt, tmp_path / "export",
                                   opts=["MODEL.WEIGHTS", str(tmp_path / "conditioned.pth")])
    images, image_sizes, mask, captions = _batch(model, SIZES, CAPTIONS)
    eager = raw_outputs(model, images, mask, captions)
    exact = raw_outputs(copy.deepcopy(model).double(), images.double(), mask, captions)
    assert _max_diff(eager["pred_logits"], exact["pred_logits"]) <= LOGITS_TOL
    assert _max_diff(eager["pred_boxes"], exact["pred_boxes"]) <= BOXES_TOL
    assert exported.manifest["check"]["pred_logits"] <= LOGITS_TOL
    assert exported.manifest["check"]["pred_boxes"] <= BOXES_TOL
    _assert_close_to_eager(model, exported)


def test_tool_exports_config_file_checkpoint(official_fixtures, tmp_path):
    """--config-file: a config from configs/ (the embedded default: Detectron2's ResNet with
    trainable BatchNorm, stride 16) and a checkpoint saved by Detectron2's checkpointer, as
    tools/train_net.py writes it; ONNX within the targets on untraced sizes."""
    from detectron2.checkpoint import DetectionCheckpointer

    argv = ["--config-file", "configs/synthetic/mdetr_synthetic.yaml", "--text-encoder",
            str(official_fixtures / "tiny_roberta"), "--format", "onnx", "--output",
            str(tmp_path / "export")]
    cfg = _export_tool.setup_cfg(_export_tool.parse_args(argv))
    torch.manual_seed(0)
    trained = build_model(cfg)
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("model_final")
    argv += ["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]
    assert _export_tool.main(argv) == 0
    model = _export_tool.build_export_model(_export_tool.setup_cfg(_export_tool.parse_args(argv)))
    exported = ExportedMDETR(str(tmp_path / "export"), num_threads=1)
    assert exported.manifest["model"]["backbone"] == "ResNet"
    _assert_close_to_eager(model, exported)
    inputs = [{"image": synthetic_image(h, w, 60 + i), "caption": c}
              for i, ((h, w), c) in enumerate(zip(SIZES, CAPTIONS))]
    with torch.no_grad():
        ref = model(inputs)
    for a, b in zip(exported(inputs), ref):
        _assert_same_instances(a["instances"], b["instances"], 1e-3)


@pytest.fixture(scope="module")
def class_prompt_export(official_fixtures, tmp_path_factory):
    """det_r18 exported to ONNX through the tool, configured for joined class prompts, traced on
    a real image; with the eager model of the same config."""
    opts = ["MODEL.MDETR.CLASS_PROMPTS.NAMES", "['dog', 'man in red', 'small cat']",
            "MODEL.MDETR.CLASS_PROMPTS.STYLE", "joined"]
    flags = ["--sample-image", str(official_fixtures / "images" / "img0.png")]
    return _tool_export(official_fixtures, "det_r18", "onnx",
                        tmp_path_factory.mktemp("export_onnx"), flags, opts)


def test_tool_onnx_class_prompts_match_eager(class_prompt_export):
    """The user's path: tools/export_model.py --format onnx on an official checkpoint with a
    class-prompt config (fast backbone by default): raw outputs on untraced sizes, and the
    runtime detects the configured classes (an input without a caption) and grounds captions as
    the eager model of the same config."""
    exported, model = class_prompt_export
    manifest = exported.manifest
    assert manifest["format"] == "onnx" and manifest["model"]["backbone_fast_path"]
    assert model.backbone.fast
    assert manifest["traced"]["image_sizes"][0] != [224, 160]  # the evaluation resize of img0
    assert manifest["check"]["pred_logits"] <= LOGITS_TOL
    assert manifest["check"]["pred_boxes"] <= BOXES_TOL
    _assert_close_to_eager(model, exported)
    inputs = [{"image": synthetic_image(150, 190, 50)},
              {"image": synthetic_image(120, 170, 51), "caption": "the small cat"}]
    with torch.no_grad():
        ref = model(inputs)
    ours = exported(inputs)
    for key in ("instances", "all_instances"):
        _assert_same_instances(ours[0][key], ref[0][key], 1e-3)
    assert len(ours[0]["all_instances"]) == 10  # one joined prompt x 10 queries
    _assert_same_instances(ours[1]["instances"], ref[1]["instances"], 1e-3)


def test_runtime_bad_inputs_get_clear_errors(class_prompt_export, tmp_path):
    """Wrong images, prompts and tensors at run time; graph files of another export; not an
    export folder."""
    exported, _ = class_prompt_export
    folder = exported.folder
    with pytest.raises(ValueError, match=r"image 0: expected a C×H×W tensor with 3 channels.*"
                                         r"\(4, 64, 64\)"):
        exported([{"image": torch.zeros(4, 64, 64), "caption": "a dog"}])
    with pytest.raises(ValueError, match=r"text_encoder\.onnx.* accepts at most 512"):
        exported([{"image": synthetic_image(64, 64, 0), "caption": "dog " * 600}])
    with pytest.raises(ValueError, match=r"image_encoder\.onnx: input 'images' must be float32, "
                                         r"got float64"):
        exported([{"image": synthetic_image(64, 64, 0).double(), "caption": "a dog"}])
    images, sizes, _, captions = _batch(exported, SIZES, CAPTIONS)
    with pytest.raises(ValueError, match=r"input 'images' must have shape \(images, 3, height, "
                                         r"width\), got \(2, 210, 190\)"):
        exported.encode_images(images[:, 0], sizes)
    with pytest.raises(ValueError, match=r"input 'image_sizes' must be int64, got int32"):
        exported.encode_images(images, sizes.int())
    with pytest.raises(ValueError, match=r"inputs 'images' and 'image_sizes' disagree on axis "
                                         r"'images': 2 vs 1"):
        exported.encode_images(images, sizes[:1])
    with pytest.raises(ValueError, match=r"grounding\.onnx: input 'text_features' must have shape "
                                         r"\(texts, tokens, \d+\), got \(2, \d+, 10\)"):
        text = exported.encode_text(captions)
        text.features = text.features[..., :10]
        exported.network(images, sizes, text)
    # A graph file of another export (other weights) next to this manifest.
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    grounding = mixed / "grounding.onnx"
    grounding.write_bytes(grounding.read_bytes()[:-1] + b"\0")
    with pytest.raises(ExportError, match=r"grounding\.onnx: not the grounding graph exported "
                                          r"with .*manifest\.json"):
        ExportedMDETR(str(mixed))
    (mixed / "text_encoder.onnx").unlink()
    with pytest.raises(ExportError, match=r"text_encoder\.onnx: missing"):
        ExportedMDETR(str(mixed))
    with pytest.raises(ExportError, match="no manifest.json"):
        ExportedMDETR(str(tmp_path))
    with pytest.raises(ExportError, match=r"grounding\.onnx: no manifest\.json"):
        ExportedMDETR(str(grounding))  # a graph file instead of its folder


@META_ARCH_REGISTRY.register()
class _MDETRWithQualityHead(MDETR):
    """A user's extension with an extra inference output the export does not know."""

    def decode(self, enc, boxes_only=False):
        out = super().decode(enc, boxes_only)
        out["pred_quality"] = out["pred_logits"][..., :1]
        return out


def test_tool_bad_input_gets_clear_errors(official_fixtures, tmp_path):
    """Wrong or missing weight files, weights of another model, unsupported configs: a clear
    error naming the file or the setting, and nothing exported."""
    fixtures = official_fixtures
    base = ["--official", str(fixtures / "det_r18" / "checkpoint.pth"), "--text-encoder",
            str(fixtures / "tiny_roberta"), "--output", str(tmp_path)]
    with pytest.raises(CheckpointError, match=r"img0\.png"):  # not a checkpoint
        _export_tool.main(base[:1] + [str(fixtures / "images" / "img0.png")] + base[2:])
    with pytest.raises(CheckpointError, match=r"MODEL\.WEIGHTS is empty"):
        _export_tool.main(base + ["MODEL.WEIGHTS", ""])
    with pytest.raises(CheckpointError, match=r"missing\.pth: no such checkpoint file"):
        _export_tool.main(base + ["MODEL.WEIGHTS", str(tmp_path / "missing.pth")])
    # A checkpoint of another architecture (EfficientNet QA model into the ResNet detector).
    other = str(fixtures / "gqa_eb0" / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="gqa_eb0/checkpoint.pth"):
        _export_tool.main(base + ["MODEL.WEIGHTS", other])
    # A config with a head the checkpoint does not have: never exported at random init.
    with pytest.raises(CheckpointError, match=r"det_r18/checkpoint.pth: 2 weight\(s\) of the "
                                              r"model are not in the file.*isfinal_embed"):
        _export_tool.main(base + ["MODEL.MDETR.PREDICT_FINAL", "True"])
    # Unsupported: a head whose output the graphs would drop; another meta-architecture.
    with pytest.raises(ExportError, match=r"unsupported head for export: _MDETRWithQualityHead "
                                          r"returns \['pred_quality'\]"):
        _export_tool.main(base + ["MODEL.META_ARCHITECTURE", "_MDETRWithQualityHead"])
    with pytest.raises(ExportError, match=r"cannot export MODEL\.META_ARCHITECTURE 'Generalized"):
        _export_tool.main(base + ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN"])
    with pytest.raises(SystemExit):  # argparse: tracing is the only export method
        _export_tool.parse_args(base + ["--export-method", "scripting"])
    assert not (tmp_path / "manifest.json").exists()
