"""First-run errors a user can act on: a text encoder that cannot be loaded, CUDA without CUDA."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.engine import default_argument_parser

from mdetr_d2.structures import TextEncoderNotFound, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
NOT_A_MODEL = "mdetr-d2-tests/not-a-model"  # a hub id that is in no cache


def _train_net_main(*argv):
    train_net = __import__("tools.train_net", fromlist=["main"])
    return train_net.main(default_argument_parser().parse_args(list(argv)))


def test_hub_name_offline_fails_at_once_and_says_what_to_do():
    # conftest sets HF_HUB_OFFLINE=1, as on a machine without network.
    with pytest.raises(TextEncoderNotFound) as error:
        build_tokenizer(NOT_A_MODEL)
    message = str(error.value)
    assert "MODEL.MDETR.TEXT_ENCODER.NAME" in message and "HF_HUB_OFFLINE" in message
    assert "local folder" in message


def test_hub_unreachable_fails_without_the_hub_clients_retries(tmp_path):
    """Not set offline but no network (a closed local port as the hub): one request, then the
    error; the hub client would otherwise retry with back-off for about a minute."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connections are refused
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in offline}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(REPO))
    code = ("from mdetr_d2.structures import build_tokenizer; "
            f"build_tokenizer({NOT_A_MODEL!r})")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "TextEncoderNotFound" in proc.stderr and "cannot be reached" in proc.stderr
    assert "MODEL.MDETR.TEXT_ENCODER.NAME" in proc.stderr
    assert "Retry" not in proc.stderr, proc.stderr[-2000:]


def test_missing_local_folder_says_so(tmp_path):
    for name in (str(tmp_path / "text_encoder"), "datasets/synthetic/no_such_encoder", "./encoder"):
        with pytest.raises(TextEncoderNotFound, match=r"folder .* does not exist"):
            build_tokenizer(name)


def test_train_net_with_an_unavailable_text_encoder(tmp_path):
    with pytest.raises(TextEncoderNotFound, match="MODEL.MDETR.TEXT_ENCODER.NAME"):
        _train_net_main("--config-file", str(REPO / "configs" / "mdetr_refcoco.yaml"),
                        "--eval-only", "MODEL.DEVICE", "cpu",
                        "MODEL.MDETR.TEXT_ENCODER.NAME", NOT_A_MODEL, "OUTPUT_DIR", str(tmp_path))


def test_cuda_device_without_cuda_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # Detectron2's default MODEL.DEVICE is "cuda"; the recipes do not change it.
    with pytest.raises(RuntimeError, match="Add `MODEL.DEVICE cpu` to the command line"):
        _train_net_main("--config-file", str(REPO / "configs" / "mdetr_refcoco.yaml"),
                        "OUTPUT_DIR", str(tmp_path))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_num_gpus_without_cuda_stops_before_starting_processes(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file",
         str(REPO / "configs" / "mdetr_refcoco.yaml"), "--num-gpus", "2",
         "OUTPUT_DIR", str(tmp_path)],
        env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("MODEL.DEVICE cpu") == 1, proc.stderr[-2000:]
    assert "ProcessRaisedException" not in proc.stderr
