"""Shared pytest fixtures.

The official-code parity fixtures (121 MB) live outside the repository, in ``../shared/fixtures/mdetr_official``
next to the checkout, or wherever ``$MDETR_OFFICIAL_FIXTURES`` points. Tests that need them skip with the
reason when they are absent, except under CI (``CI=true``) where a missing folder is an error.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "mdetr_official"


def official_fixtures_dir() -> Path:
    return Path(os.environ.get("MDETR_OFFICIAL_FIXTURES", DEFAULT_FIXTURES))


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """Folder of the official MDETR parity fixtures (see its README)."""
    path = official_fixtures_dir()
    if not (path / "README.md").is_file():
        message = (
            f"official MDETR fixtures not found at {path}; set MDETR_OFFICIAL_FIXTURES to the "
            "mdetr_official folder"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def _weights_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mdetr_weights_cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, _weights_cache):
    """Tests never reach the network: HF loads must come from local folders, and released weights
    (mdetr://) from a test server (an unused local port here: a download attempt fails at once)
    into a temporary cache, never the user's."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("MDETR_WEIGHTS_URL", "http://127.0.0.1:9/no-network-in-tests")
    monkeypatch.setenv("MDETR_WEIGHTS_CACHE", str(_weights_cache))


TINY_CAPTIONS = [
    "a man in a red shirt holds a small dog .",
    "the cat on the left",
    "the small red circle left of the blue square",
    "what color is the large sphere ?",
    "two green triangles and a yellow star",
]


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory) -> str:
    """A local folder with a byte-level BPE tokenizer and a small random RoBERTa (no download)."""
    from mdetr_synthetic.text_encoder import build_text_encoder_folder

    folder = tmp_path_factory.mktemp("tiny_text_encoder")
    build_text_encoder_folder(folder, TINY_CAPTIONS * 4, seed=0, hidden_size=32, num_layers=1,
                              num_heads=2, max_position_embeddings=514, vocab_size=300)
    return str(folder)


def tiny_mdetr_cfg(text_encoder: str, **overrides):
    """A small MDETR config (ResNet-18, 1+1 layers, 64 wide, 5 queries) on CPU."""
    from detectron2.config import get_cfg

    from mdetr_d2 import add_mdetr_config

    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    m = cfg.MODEL.MDETR
    m.TEXT_ENCODER.NAME = text_encoder
    m.HIDDEN_DIM = 64
    m.NHEADS = 4
    m.ENC_LAYERS = 1
    m.DEC_LAYERS = 2
    m.DIM_FEEDFORWARD = 64
    m.NUM_QUERIES = 5
    m.CONTRASTIVE_HDIM = 16
    cfg.INPUT.MDETR.TEST_SIZE = 64
    cfg.INPUT.MDETR.TEST_MAX_SIZE = 96
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg
