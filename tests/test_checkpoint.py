"""Loading official and Detectron2 checkpoints: conversion round trip, EMA selection, bad files."""
import argparse
import collections

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from mdetr_d2.checkpoint import (
    CheckpointError,
    MDETRCheckpointer,
    build_official_model,
    convert_official_state_dict,
    official_cfg,
)
from mdetr_d2.predictor import MDETRPredictor

from .conftest import tiny_mdetr_cfg

_convert = __import__("tools.convert_mdetr_checkpoint", fromlist=["main"]).main


@pytest.fixture(scope="module")
def tiny_model(tiny_text_encoder):
    torch.manual_seed(0)
    return build_model(tiny_mdetr_cfg(tiny_text_encoder)).eval()


def _outputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        return model.forward_network(images, torch.zeros(2, 64, 64, dtype=torch.bool), ["a dog", "the cat"])


def test_converter_round_trip(official_fixtures, tmp_path):
    src = str(official_fixtures / "det_r18" / "checkpoint.pth")
    text = str(official_fixtures / "tiny_roberta")
    for weights in ("model_ema", "model"):
        out = tmp_path / f"{weights}.pth"
        yaml = tmp_path / f"{weights}.yaml"
        assert _convert([src, str(out), "--weights", weights, "--config-out", str(yaml),
                         "--text-encoder", text]) == 0
        cfg = official_cfg(src, text_encoder=text, device="cpu")
        cfg.merge_from_file(str(yaml))
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(str(out))  # a plain Detectron2 checkpointer suffices
        reference = build_official_model(src, text_encoder=text, weights_key=weights, device="cpu")
        ours, theirs = _outputs(model), _outputs(reference)
        assert torch.equal(ours["pred_logits"], theirs["pred_logits"])
        assert torch.equal(ours["pred_boxes"], theirs["pred_boxes"])


def test_ema_and_raw_weights_really_differ(official_fixtures):
    src = str(official_fixtures / "det_r18" / "checkpoint.pth")
    text = str(official_fixtures / "tiny_roberta")
    ema = build_official_model(src, text_encoder=text, weights_key="model_ema", device="cpu")
    raw = build_official_model(src, text_encoder=text, weights_key="model", device="cpu")
    differing = [k for k, v in ema.state_dict().items() if not torch.equal(v, raw.state_dict()[k])]
    assert any(k.startswith("transformer.") for k in differing)
    assert any(k.startswith("text_encoder.body.") for k in differing)


def test_conversion_renames_and_drops_stale_keys():
    official = collections.OrderedDict(
        [
            ("detr.backbone.0.body.conv1.weight", torch.zeros(1)),
            ("detr.transformer.text_encoder.embeddings.position_ids", torch.arange(4)[None]),
            ("detr.transformer.text_encoder.embeddings.word_embeddings.weight", torch.zeros(1)),
            ("detr.transformer.resizer.fc.weight", torch.zeros(1)),
            ("transformer.CLS.weight", torch.zeros(1)),
            ("answer_type_head.weight", torch.zeros(1)),
            ("mask_head.lay1.weight", torch.zeros(1)),
        ]
    )
    assert sorted(convert_official_state_dict(official)) == sorted([
        "backbone.body.conv1.weight",
        "text_encoder.body.embeddings.word_embeddings.weight",
        "text_encoder.resizer.fc.weight",
        "cls_token.weight",
        "qa_head.answer_type_head.weight",
        "mask_head.lay1.weight",
    ])


def _official_like(model, ema_shift=0.0):
    """An official-layout checkpoint of ``model`` (keys renamed back), with a shifted EMA copy."""
    back = {"backbone.body.": "backbone.0.body.", "text_encoder.body.": "transformer.text_encoder.",
            "text_encoder.resizer.": "transformer.resizer."}
    state = {}
    for k, v in model.state_dict().items():
        for ours, theirs in back.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        state[k] = v.clone()
    ema = {k: v + ema_shift if v.is_floating_point() else v for k, v in state.items()}
    return {"model": state, "model_ema": ema, "epoch": 3, "args": argparse.Namespace(backbone="resnet18")}


def test_weights_key_selects_ema_or_model(tiny_model, tiny_text_encoder, tmp_path):
    path = tmp_path / "official.pth"
    torch.save(_official_like(tiny_model, ema_shift=0.01), path)
    for key, shift in (("model_ema", 0.01), ("model", 0.0)):
        model = build_model(tiny_mdetr_cfg(tiny_text_encoder))
        MDETRCheckpointer(model, weights_key=key).load(str(path), checkpointables=[])
        w = model.state_dict()["class_embed.weight"]
        torch.testing.assert_close(w, tiny_model.state_dict()["class_embed.weight"] + shift)


def test_detectron2_checkpoint_with_ema(tiny_model, tiny_text_encoder, tmp_path):
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in tiny_model.state_dict().items()}
    torch.save({"model": tiny_model.state_dict(), "model_ema": ema, "iteration": 5}, tmp_path / "ck.pth")
    weights_only = build_model(tiny_mdetr_cfg(tiny_text_encoder))
    MDETRCheckpointer(weights_only).load(str(tmp_path / "ck.pth"), checkpointables=[])
    assert torch.equal(weights_only.class_embed.bias, ema["class_embed.bias"])
    resumed = build_model(tiny_mdetr_cfg(tiny_text_encoder))
    MDETRCheckpointer(resumed).load(str(tmp_path / "ck.pth"))  # full load: raw weights
    assert torch.equal(resumed.class_embed.bias, tiny_model.class_embed.bias)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_unexpected_pickled_class_is_refused(tiny_model, tmp_path, capsys):
    path = tmp_path / "evil.pth"
    ck = _official_like(tiny_model)
    ck["extra"] = _Evil()
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        MDETRCheckpointer(tiny_model).load(str(path), checkpointables=[])
    assert "pickled code ran" not in capsys.readouterr().out


def test_truncated_file_is_reported(tiny_model, tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save(_official_like(tiny_model), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        MDETRCheckpointer(tiny_model).load(str(path), checkpointables=[])


def test_non_mdetr_checkpoint_is_refused(tiny_model, tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"model": {"stem.conv1.weight": torch.zeros(3), "fc.bias": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not an MDETR checkpoint"):
        MDETRCheckpointer(tiny_model).load(str(path), checkpointables=[])
    with pytest.raises(SystemExit, match="not an official MDETR checkpoint"):
        _convert([str(path), str(tmp_path / "out.pth")])


# --------------------------------------------------------------------------------------------------
# Weights whose shapes disagree with the model
def test_mismatched_shapes_are_refused_with_keys_and_shapes(tiny_model, tiny_text_encoder, tmp_path,
                                                            official_fixtures):
    ours = tmp_path / "ours.pth"
    torch.save({"model": tiny_model.state_dict()}, ours)
    # Our checkpoint of a 64-wide model into a 32-wide config (MODEL.WEIGHTS of the predictor).
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{"MODEL.MDETR.HIDDEN_DIM": 32, "MODEL.WEIGHTS": str(ours)})
    with pytest.raises(CheckpointError) as info:
        MDETRPredictor(cfg)
    message = str(info.value)
    assert str(ours) in message and "SKIP_MISMATCHED_WEIGHTS" in message
    assert "query_embed.weight: (5, 64) in the checkpoint, (5, 32) in the model" in message
    assert "input_proj.weight: (64, 512, 1, 1) in the checkpoint, (32, 512, 1, 1) in the model" in message
    # An official file into a config that does not match it (5 queries instead of its 10).
    src = str(official_fixtures / "det_r18" / "checkpoint.pth")
    cfg = official_cfg(src, text_encoder=str(official_fixtures / "tiny_roberta"), device="cpu")
    cfg.MODEL.MDETR.NUM_QUERIES = 5
    with pytest.raises(CheckpointError, match=r"query_embed\.weight: \(10, 64\) in the checkpoint, \(5, 64\) in"):
        MDETRPredictor(cfg)


def test_mismatched_shapes_are_refused_in_training(tmp_path):
    from .test_engine_trainer import TinyMDETR, TinyTrainer, register_tiny_datasets, tiny_cfg

    register_tiny_datasets()
    state = TinyMDETR().state_dict()
    state["head.weight"] = torch.zeros(1, 9)
    torch.save({"model": state}, tmp_path / "other.pth")
    trainer = TinyTrainer(tiny_cfg(tmp_path / "out", **{"MODEL.WEIGHTS": str(tmp_path / "other.pth")}))
    with pytest.raises(CheckpointError, match=r"head\.weight: \(1, 9\) in the checkpoint, \(1, 8\) in the model"):
        trainer.resume_or_load(resume=False)


def test_explicit_skip_fine_tunes_into_a_new_qa_vocabulary(tiny_text_encoder, tmp_path):
    cfg = tiny_mdetr_cfg(tiny_text_encoder, **{"MODEL.MDETR.QA_HEAD": "gqa_single"})
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    # Trained with another answer vocabulary: 10 answers instead of GQA's 1853.
    state["qa_head.answer_head.weight"] = torch.randn(10, 64)
    state["qa_head.answer_head.bias"] = torch.randn(10)
    torch.save({"model": state}, tmp_path / "qa10.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "qa10.pth")
    with pytest.raises(CheckpointError, match=r"qa_head\.answer_head\.weight: \(10, 64\) in the checkpoint, "
                                              r"\(1853, 64\) in the model"):
        MDETRPredictor(cfg)

    cfg.MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS = [r"qa_head\."]
    torch.manual_seed(1)
    initial = build_model(cfg).state_dict()
    torch.manual_seed(1)
    loaded = MDETRPredictor(cfg).model.state_dict()  # the same initialization, then the file
    for k, v in loaded.items():
        assert torch.equal(v, initial[k] if k.startswith("qa_head.answer_head.") else state[k]), k


# --------------------------------------------------------------------------------------------------
# Large files are read once
@pytest.fixture
def torch_loads(monkeypatch):
    """Every torch.load call: (file, whether its tensors were memory-mapped instead of read)."""
    calls, real = [], torch.load

    def counting(f, *args, **kwargs):
        calls.append((str(f), bool(kwargs.get("mmap"))))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return calls


def test_official_file_is_read_once(official_fixtures, tmp_path, torch_loads):
    src = str(official_fixtures / "det_r18" / "checkpoint.pth")
    text = str(official_fixtures / "tiny_roberta")
    build_official_model(src, text_encoder=text, device="cpu")
    assert torch_loads == [(src, False)]
    torch_loads.clear()
    assert _convert([src, str(tmp_path / "out.pth"), "--config-out", str(tmp_path / "out.yaml"),
                     "--text-encoder", text]) == 0
    assert torch_loads == [(src, False)]
    torch_loads.clear()
    # What tools/demo.py --official does: the config from the file's args (metadata only, the tensors
    # memory-mapped), then one read of the weights.
    MDETRPredictor(official_cfg(src, text_encoder=text, device="cpu"))
    assert torch_loads == [(src, True), (src, False)]
    torch_loads.clear()
    DetectionCheckpointer(build_model(official_cfg(src, text_encoder=text, device="cpu"))).load(src)
    assert [read for read in torch_loads if not read[1]] == [(src, False)]
