"""Bad records and bad runs through the user's path (``tools/train_net.py`` with the embedded
default config on a registered MDETR-json dataset): a corrupt image, a caption longer than the text
encoder's positions and a caption the tokenizer cannot encode are skipped in training and named;
past the budget, in evaluation and on divergence, training stops with an error that says what
happened; a run killed with SIGKILL resumes to the uninterrupted run's weights bit for bit."""
import io
import json
import os
import runpy
import signal

import numpy as np
import pytest
import torch
from detectron2.engine import HookBase
from PIL import Image
from torch import multiprocessing as mp

import mdetr_d2.data as D
from mdetr_d2.engine import MDETRTrainer, default_argument_parser

from .conftest import TINY_CAPTIONS

DATASET = "test_bad_records_train"
CLEAN = "test_bad_records_clean"  # the same without the bad records
CORRUPT, TOO_LONG, BAD_TEXT = 7, 8, 9  # image ids of the bad records
train_net = __import__("tools.train_net", fromlist=["main"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """10 image-caption records of small JPEGs; 7 good, then the three bad ones."""
    root = tmp_path_factory.mktemp("bad_records")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(10):
        w, h = (40, 32) if i % 2 else (32, 40)
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        data = buffer.getvalue()
        if i == CORRUPT:
            data = data[: len(data) // 2]  # truncated, as an interrupted download leaves it
        (root / "images" / f"{i}.jpg").write_bytes(data)
        caption = TINY_CAPTIONS[i % len(TINY_CAPTIONS)]
        if i == TOO_LONG:
            caption = " ".join(["circle"] * 600)
        if i == BAD_TEXT:
            caption = "the cat \ud800 on the left"  # a lone surrogate (json "\ud800")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h,
                       "caption": caption})
        annotations.append({"id": i, "image_id": i, "bbox": [4, 4, 20, 16], "category_id": 1,
                            "tokens_positive": [[0, 3]], "iscrowd": 0})
    for name, n in ((DATASET, 10), (CLEAN, CORRUPT)):
        path = root / f"{name}.json"
        path.write_text(json.dumps({"images": images[:n], "annotations": annotations[:n],
                                    "categories": [{"id": 1, "name": "object"}]}))
    _register(root)
    return root


def _register(root):
    for name in (DATASET, CLEAN):
        D.register_mdetr_json(name, str(root / f"{name}.json"), str(root / "images"))


def _args(out, tiny_text_encoder, *opts, resume=False, eval_only=False):
    argv = ["--config-file", "configs/synthetic/mdetr_synthetic.yaml"]
    argv += ["--resume"] * resume + ["--eval-only"] * eval_only
    argv += [
        "OUTPUT_DIR", str(out), "MODEL.MDETR.TEXT_ENCODER.NAME", tiny_text_encoder,
        "DATASETS.TRAIN", f"('{DATASET}',)", "DATASETS.TEST", "()",
        "INPUT.MDETR.SCALES", "[32, 40]", "INPUT.MDETR.MAX_SIZE", "64",
        "MODEL.MDETR.DROPOUT", "0.1", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "6",
        "SOLVER.CHECKPOINT_PERIOD", "2", "DATALOADER.NUM_WORKERS", "2",
        "DATALOADER.MAX_BAD_RECORD_FRACTION", "0.3", "SEED", "3", *opts,
    ]
    return default_argument_parser().parse_args(argv)


class _SigKill(HookBase):
    def before_step(self):
        if self.trainer.iter == 5:
            os.kill(os.getpid(), signal.SIGKILL)


def _killed_child(args, root):
    _register(root)  # a spawned process starts with empty catalogs
    build_hooks = MDETRTrainer.build_hooks
    MDETRTrainer.build_hooks = lambda self: build_hooks(self) + [_SigKill()]
    train_net.main(args)


def test_train_net_skips_and_names_bad_records_and_resumes_exactly(
    world, tiny_text_encoder, tmp_path
):
    train_net.main(_args(tmp_path / "full", tiny_text_encoder))  # finishes
    log = (tmp_path / "full" / "log.txt").read_text().splitlines()  # the run's log file
    skipped = [line for line in log if "Skipped training record" in line]
    for image_id, field in ((CORRUPT, "file_name"), (TOO_LONG, "caption"), (BAD_TEXT, "caption")):
        named = [m for m in skipped if f"image_id={image_id} " in m]
        assert named and f"field {field!r}" in named[0] and f"{image_id}.jpg" in named[0], skipped
        assert f"dataset {DATASET!r} index {image_id}" in named[0]
    assert "image file is truncated" in " ".join(skipped)
    assert "more than the 512 the text encoder accepts" in " ".join(skipped)
    summaries = [line for line in log if "bad training record(s) skipped" in line]
    assert len(summaries) == 3 and "3 bad training record(s) skipped" in summaries[-1]  # it 1, 3, 5

    # The same run, killed with SIGKILL before iteration 5 (last checkpoint after 3), resumed.
    # Spawned, not forked: a child forked after this process ran OpenMP-parallel torch ops
    # deadlocks in libgomp at its first parallel op (unless OMP_NUM_THREADS=1).
    child = mp.get_context("spawn").Process(
        target=_killed_child, args=(_args(tmp_path / "killed", tiny_text_encoder), world))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    assert (tmp_path / "killed" / "last_checkpoint").read_text() == "model_0000003.pth"
    train_net.main(_args(tmp_path / "killed", tiny_text_encoder, resume=True))
    full = torch.load(tmp_path / "full" / "model_final.pth")
    resumed = torch.load(tmp_path / "killed" / "model_final.pth")
    for key in ("model", "model_ema"):
        assert full[key].keys() == resumed[key].keys()
        diff = max((full[key][k].double() - resumed[key][k].double()).abs().max().item()
                   for k in full[key] if full[key][k].numel())
        print(f"train_net, SIGKILL at iteration 5 then --resume: max |diff| {key} = {diff}")
        assert diff == 0.0
    for a, b in zip(full["trainer"]["_trainer"]["optimizer"]["state"].values(),
                    resumed["trainer"]["_trainer"]["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # The stream's state, skipped records included, carried over.
    assert full["trainer"]["hooks"] == resumed["trainer"]["hooks"]


def test_train_net_stops_past_the_budget(world, tiny_text_encoder, tmp_path):
    with pytest.raises(D.BadRecordBudgetError, match=(
        r"1 training record\(s\) could not be read or encoded, more than the 0 allowed "
        r"\(DATALOADER.MAX_BAD_RECORD_FRACTION\): .*image_id=\d.*field '(file_name|caption)'"
    )):
        train_net.main(_args(tmp_path, tiny_text_encoder, "DATALOADER.MAX_BAD_RECORD_FRACTION",
                             "0.0"))


def test_evaluation_never_skips(world, tiny_text_encoder, tmp_path):
    # No loader workers: a failed test loader's workers end only at garbage collection (torch).
    args = _args(tmp_path, tiny_text_encoder, "DATASETS.TEST", f"('{DATASET}',)",
                 "DATALOADER.NUM_WORKERS", "0", eval_only=True)
    pattern = rf"image_id={CORRUPT} .*{CORRUPT}\.jpg.*'file_name'"
    with pytest.raises(D.BadRecordError, match=pattern):
        train_net.main(args)


def test_divergence_is_reported_before_the_matcher(world, tiny_text_encoder, tmp_path):
    args = _args(tmp_path, tiny_text_encoder, "DATASETS.TRAIN", f"('{CLEAN}',)",
                 "DATALOADER.NUM_WORKERS", "0",
                 "SOLVER.BASE_LR", "1e12", "SOLVER.CLIP_MAX_NORM", "0.0",
                 "SOLVER.BACKBONE_LR", "1e12", "SOLVER.TEXT_ENCODER_LR", "1e12")
    with pytest.raises(FloatingPointError,
                       match=r"Model outputs became infinite or NaN at iteration=\d+: .*pred_"):
        train_net.main(args)


def test_register_check_names_captions_the_text_encoder_cannot_take(
    world, tiny_text_encoder, capsys
):
    register = runpy.run_path("datasets/register.py")
    register["main"](["--check", "--only", DATASET, "--tokenizer", tiny_text_encoder])
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if ": caption: " in line]
    assert len(problems) == 2, out
    assert f"image_id={TOO_LONG} " in problems[0] and "more than the 512 the text encoder" in out
    assert f"image_id={BAD_TEXT} " in problems[1] and "cannot encode" in problems[1]
    assert "expected: a caption the text encoder can take" in out
