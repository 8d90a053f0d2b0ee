"""No checkpoint we load can run code, through any load path and whatever the environment says;
Detectron2 model-zoo ``.pkl`` weights and official files read by Detectron2's own checkpointer still
load."""
import argparse
import pickle

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor, default_argument_parser
from detectron2.modeling import build_model

from mdetr_d2.checkpoint import (
    CheckpointError,
    MDETRCheckpointer,
    UnsafeCheckpointError,
    build_official_model,
    official_cfg,
)
from mdetr_d2.predictor import MDETRPredictor

from .conftest import tiny_mdetr_cfg
from .test_engine_trainer import TinyTrainer, register_tiny_datasets, tiny_cfg

_tool = lambda name: __import__(f"tools.{name}", fromlist=["main"]).main  # noqa: E731


class _WritesMarker:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _official_names(state):
    back = {"backbone.body.": "backbone.0.body.", "text_encoder.body.": "transformer.text_encoder."}
    out = {}
    for k, v in state.items():
        for ours, theirs in back.items():
            if k.startswith(ours):
                k = theirs + k[len(ours):]
        out[k] = v
    return out


@pytest.fixture(scope="module")
def tiny_state(tiny_text_encoder):
    torch.manual_seed(0)
    return build_model(tiny_mdetr_cfg(tiny_text_encoder)).state_dict()


@pytest.fixture
def evil_files(tmp_path, tiny_state, monkeypatch):
    """A malicious .pkl, .pth, .bin and an official-looking .pth with a malicious ``args``; the marker
    they would create; the environment variable that turns torch's own protection off."""
    marker = tmp_path / "code_ran"
    payload = _WritesMarker(marker)
    folder = tmp_path / "evil"
    folder.mkdir()
    files = {}
    with open(folder / "weights.pkl", "wb") as f:  # Detectron2 model-zoo layout
        pickle.dump({"model": {k: v.numpy() for k, v in tiny_state.items()}, "__author__": payload}, f)
    files["pkl"] = folder / "weights.pkl"
    for ext in ("pth", "bin"):
        torch.save({"model": tiny_state, "iteration": payload}, folder / f"weights.{ext}")
        files[ext] = folder / f"weights.{ext}"
    official = _official_names(tiny_state)
    torch.save({"model": official, "model_ema": official, "epoch": 1, "args": payload}, folder / "official.pth")
    files["official"] = folder / "official.pth"
    # The payloads work: an unrestricted load runs them.
    torch.load(files["bin"], weights_only=False)
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return files, marker


def _assert_each_refused(files, marker, load, error=CheckpointError):
    for kind, path in files.items():
        with pytest.raises(error) as info:
            load(str(path))
        message = str(info.value)
        assert str(path) in message and "builtins.exec" in message, (kind, message)
        assert not marker.exists(), f"{kind}: pickled code ran"


def test_training_weights_and_resume_refuse_code(evil_files, tmp_path):
    files, marker = evil_files
    register_tiny_datasets()

    def train_from(path, resume):
        out = tmp_path / f"train_{resume}"
        cfg = tiny_cfg(out, **{"MODEL.WEIGHTS": "" if resume else path})
        (out / "last_checkpoint").write_text(path)  # absolute: the folder's tag names the file
        TinyTrainer(cfg).resume_or_load(resume=resume)

    for resume in (False, True):
        _assert_each_refused(files, marker, lambda p: train_from(p, resume), UnsafeCheckpointError)


def test_eval_only_through_train_net_refuses_code(evil_files, tmp_path, tiny_text_encoder):
    files, marker = evil_files
    train_net = __import__("tools.train_net", fromlist=["main"])
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_mdetr_cfg(tiny_text_encoder).dump())

    def eval_only(path, resume):
        out = tmp_path / f"eval_{resume}"
        out.mkdir(exist_ok=True)
        (out / "last_checkpoint").write_text(path)
        argv = ["--config-file", str(config), "--eval-only", *(["--resume"] if resume else []),
                "MODEL.WEIGHTS", "" if resume else path, "OUTPUT_DIR", str(out)]
        train_net.main(default_argument_parser().parse_args(argv))

    for resume in (False, True):
        _assert_each_refused(files, marker, lambda p: eval_only(p, resume))


def test_predictor_demo_benchmark_convert_and_official_builders_refuse_code(
        evil_files, tmp_path, tiny_text_encoder):
    files, marker = evil_files
    cfg = tiny_mdetr_cfg(tiny_text_encoder)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.dump())

    def predictor(path):
        c = cfg.clone()
        c.MODEL.WEIGHTS = path
        MDETRPredictor(c)

    def demo(path, official):
        source = ["--official", path, "--text-encoder", tiny_text_encoder] if official else [
            "--config-file", str(config)]
        _tool("demo")([*source, "--input", "x.png", "--caption", "a cat", "--output", str(tmp_path / "demo"),
                       "--opts", "MODEL.DEVICE", "cpu", *([] if official else ["MODEL.WEIGHTS", path])])

    def benchmark(path, official):
        source = ["--official-checkpoint", path] if official else ["--config-file", str(config)]
        _tool("benchmark")([*source, "--text-encoder", tiny_text_encoder, "--device", "cpu",
                            *([] if official else ["--opts", "MODEL.WEIGHTS", path])])

    def convert(path):
        _tool("convert_mdetr_checkpoint")([path, str(tmp_path / "out.pth")])

    _assert_each_refused(files, marker, predictor)
    for official in (False, True):
        _assert_each_refused(files, marker, lambda p: demo(p, official))
        _assert_each_refused(files, marker, lambda p: benchmark(p, official))
    _assert_each_refused(files, marker, convert, SystemExit)
    _assert_each_refused(files, marker, lambda p: build_official_model(p, text_encoder=tiny_text_encoder))
    _assert_each_refused(files, marker, official_cfg)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("heuristics", [False, True])
def test_detectron2_model_zoo_pkl_still_loads(tmp_path, tiny_state, tiny_text_encoder, protocol, heuristics):
    path = tmp_path / "model_final.pkl"
    zoo = {"model": {k: v.numpy() for k, v in tiny_state.items()}, "__author__": "Detectron2 Model Zoo"}
    zoo["model"]["class_embed.bias"] = np.float32(3.0) * zoo["model"]["class_embed.bias"]  # a numpy scalar op
    if heuristics:
        zoo["matching_heuristics"] = True
    with open(path, "wb") as f:
        pickle.dump(zoo, f, protocol=protocol)
    cfg = tiny_mdetr_cfg(tiny_text_encoder)
    cfg.MODEL.WEIGHTS = str(path)
    loaded = MDETRPredictor(cfg).model.state_dict()
    for k, v in zoo["model"].items():
        assert torch.equal(loaded[k], torch.from_numpy(v)), k


def test_pkl_with_other_classes_names_the_class(tmp_path):
    path = tmp_path / "weights.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "__author__": "x", "args": argparse.Namespace(a=1)}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pkl: refusing to load: it holds pickled argparse\.Namespace,"):
        MDETRCheckpointer(torch.nn.Linear(2, 2)).load(str(path))


def test_detectron2_checkpointer_and_default_predictor_read_official_files(official_fixtures):
    """Detectron2's own loaders (DefaultPredictor) read an official file with the weights-only
    allow-list and the official names; like the official torch.hub entry points they take ``model``."""
    src = str(official_fixtures / "det_r18" / "checkpoint.pth")
    text = str(official_fixtures / "tiny_roberta")
    expected = build_official_model(src, text_encoder=text, weights_key="model", device="cpu").state_dict()
    cfg = official_cfg(src, text_encoder=text, device="cpu")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(src)
    loaded = DefaultPredictor(cfg).model.state_dict()
    for state in (model.state_dict(), loaded):
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], expected[k]) for k in expected)

