"""Checkpoints are written atomically, and resuming survives a killed write, an empty or corrupt
``last_checkpoint`` and a corrupt tagged checkpoint (falls back to the newest readable one)."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mdetr_d2.checkpoint import CheckpointError, load_checkpoint_file

from .test_engine_trainer import TinyTrainer, register_tiny_datasets, run, tiny_cfg

REPO = Path(__file__).resolve().parents[1]
# The subprocess trains the tiny stand-in, checkpointing every 2 iterations, and blocks halfway
# through writing its second checkpoint (model_0000003), where the test kills it.
_SLOW_WRITER = textwrap.dedent("""
    import io, os, sys, time
    import torch
    from tests.test_engine_trainer import register_tiny_datasets, run, tiny_cfg

    out = sys.argv[1]
    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        if "model_0000003" in str(getattr(f, "name", f)):
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            open(os.path.join(out, "WRITING"), "w").close()
            time.sleep(300)
        return real_save(obj, f, *args, **kwargs)

    torch.save = slow_save
    register_tiny_datasets()
    run(tiny_cfg(out, **{"SOLVER.CHECKPOINT_PERIOD": 2, "SOLVER.MAX_ITER": 6}))
""")


def _cfg(out):
    return tiny_cfg(out, **{"SOLVER.CHECKPOINT_PERIOD": 2, "SOLVER.MAX_ITER": 6})


def test_kill_during_checkpoint_write_keeps_previous_and_resume_works(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (out / "WRITING").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the training process never reached its second checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()

    # No half-written file under a checkpoint's name; the tag still names the previous checkpoint.
    assert not (out / "model_0000003.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert load_checkpoint_file(str(out / "model_0000001.pth"))["iteration"] == 1
    register_tiny_datasets()
    resumed = run(_cfg(out), resume=True)
    assert resumed.start_iter == 2 and resumed.iter == 6  # iterations 2..5 ran
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(out.glob(".*.tmp"))  # the interrupted temporary file was replaced and renamed


@pytest.fixture
def finished_run(tmp_path):
    register_tiny_datasets()
    out = tmp_path / "run"
    run(_cfg(out))
    now = time.time()
    for age, name in enumerate(["model_final.pth", "model_0000005.pth", "model_0000003.pth",
                                "model_0000001.pth"]):
        os.utime(out / name, (now - 10 * age, now - 10 * age))  # newest first, whatever the clock
    return out


def _resume(out):
    trainer = TinyTrainer(_cfg(out))
    trainer.resume_or_load(resume=True)
    return trainer


@pytest.mark.parametrize("tag", [b"", b"\n", b"model_9999999.pth", b"\x00\xff not utf-8"])
def test_empty_or_corrupt_last_checkpoint_falls_back_to_newest(finished_run, caplog, tag):
    (finished_run / "last_checkpoint").write_bytes(tag)
    with caplog.at_level(logging.WARNING):
        trainer = _resume(finished_run)
    assert trainer.start_iter == 6 and trainer.checkpointer.loaded_file.endswith("model_final.pth")
    assert "missing or empty" in caplog.text and "model_final.pth" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_corrupt_tagged_checkpoint_falls_back_to_next_newest(finished_run, caplog, damage):
    final = finished_run / "model_final.pth"
    final.write_bytes(final.read_bytes()[:2000] if damage == "truncated" else b"")
    with caplog.at_level(logging.WARNING):
        trainer = _resume(finished_run)
    assert trainer.start_iter == 6 and trainer.checkpointer.loaded_file.endswith("model_0000005.pth")
    assert "model_0000005.pth" in caplog.text


def test_no_readable_checkpoint_is_an_error(finished_run):
    for f in finished_run.glob("*.pth"):
        f.write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint to resume from") as info:
        _resume(finished_run)
    assert all(name in str(info.value) for name in ("model_0000005.pth", "model_0000001.pth"))
