"""MDETRTrainer end to end on CPU with a tiny stand-in model (no MDETR model, mapper or evaluator
needed).

The stand-in has the parameter names the optimizer groups by (``backbone.*``,
``text_encoder.body.*``, ``text_encoder.resizer.*``, a head), a frozen parameter and a buffer
updated in training, and returns a dict of already-weighted losses, like the real model.
"""
import contextlib
import copy
import errno
import json
import os
import signal
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm
from torch import multiprocessing as mp
from torch import nn

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine import MDETRTrainer, launch
from mdetr_d2.engine.ema import unwrap_model

TINY_DATA = "mdetr_engine_tiny_train"


def _tiny_dicts():
    gen = torch.Generator().manual_seed(0)
    w_x, w_t = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
    dicts = []
    for i in range(16):  # every record different: a batch depends on where the stream is
        x, t = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
        y = float(w_x @ x + w_t @ t) / 4
        # Sizes only matter to aspect-ratio grouping: landscape and portrait "images".
        width, height = (8, 6) if i % 3 else (6, 8)
        dicts.append({"image_id": i, "x": x.tolist(), "t": t.tolist(), "y": y, "width": width,
                      "height": height})
    return dicts


def register_tiny_datasets():
    if TINY_DATA not in DatasetCatalog.list():
        DatasetCatalog.register(TINY_DATA, _tiny_dicts)


def tiny_mapper(d):
    """A record -> model input, with a random "augmentation" drawn from numpy's global generator
    (as Detectron2's augmentations do)."""
    out = {k: torch.tensor(d[k]) for k in ("x", "t", "y")}
    out["x"] = out["x"] + torch.from_numpy(0.01 * np.random.randn(6)).float()
    for key in ("image_id", "width", "height"):
        out[key] = d[key]
    return out


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 6)  # frozen, like the official ResNet stem
        self.stem.requires_grad_(False)
        self.body = nn.Linear(6, 8)


class _TextEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.resizer = nn.Linear(8, 8)


class TinyMDETR(nn.Module):
    """Stand-in for MDETR: regression of ``y`` from an "image" ``x`` and a "caption" ``t``, with
    dropout (random numbers in the training process, as MDETR's transformer has). ``seen`` lists
    the image ids of every training batch."""

    def __init__(self, nan_at_call: int = -1, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout
        self.backbone = _Backbone()
        self.text_encoder = _TextEncoder()
        self.head = nn.Linear(8, 1)
        self.register_buffer("running_x", torch.zeros(6))
        self.nan_at_call = nan_at_call
        self.calls = 0
        self.seen = []

    def forward(self, batched_inputs):
        x = torch.stack([d["x"] for d in batched_inputs])
        t = torch.stack([d["t"] for d in batched_inputs])
        y = torch.stack([d["y"] for d in batched_inputs])
        hidden = F.relu(self.backbone.body(self.backbone.stem(x)))
        hidden = hidden + self.text_encoder.resizer(F.relu(self.text_encoder.body(t)))
        pred = self.head(F.dropout(hidden, self.dropout, self.training)).squeeze(-1)
        if not self.training:
            return [{"pred": p} for p in pred]
        self.seen.append([d["image_id"] for d in batched_inputs])
        with torch.no_grad():
            self.running_x.mul_(0.9).add_(0.1 * x.mean(0))
        l1 = 0.5 * F.l1_loss(pred.float(), y)
        if self.calls == self.nan_at_call:
            l1 = l1 * float("nan")
        self.calls += 1
        return {"loss_mse": 2.0 * F.mse_loss(pred.float(), y), "loss_l1": l1}


class TinyTrainer(MDETRTrainer):
    nan_at_call = -1

    @classmethod
    def build_model(cls, cfg):
        torch.manual_seed(0)  # the same initial weights whatever the run seed
        return TinyMDETR(cls.nan_at_call, cfg.MODEL.MDETR.DROPOUT).to(cfg.MODEL.DEVICE)

    @classmethod
    def build_mapper(cls, cfg, is_train):
        return tiny_mapper

    def build_writers(self):
        return []


def tiny_cfg(output_dir, **overrides):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    os.makedirs(output_dir, exist_ok=True)  # default_setup's job in tools/train_net.py
    cfg.SEED = 0
    cfg.DATASETS.TRAIN = (TINY_DATA,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False  # as in Base-MDETR.yaml
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.SOLVER.BACKBONE_LR = 5e-3
    cfg.SOLVER.TEXT_ENCODER_LR = 5e-3
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.LR_DROP = 8
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.MODEL.MDETR.DROPOUT = 0.0
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def run(cfg, trainer_cls=TinyTrainer, resume=False, extra_hooks=()):
    trainer = trainer_cls(cfg)
    trainer.register_hooks(list(extra_hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


def losses_of(trainer):
    return [v for v, _ in trainer.storage.history("total_loss").values()]


@pytest.fixture(autouse=True)
def _datasets():
    register_tiny_datasets()


def test_loss_decreases_and_groups(tmp_path):
    lr = 3e-2
    trainer = run(tiny_cfg(tmp_path, **{
        "SOLVER.MAX_ITER": 60, "SOLVER.LR_DROP": 40, "SOLVER.IMS_PER_BATCH": 8,
        "SOLVER.BASE_LR": lr,
        "SOLVER.BACKBONE_LR": lr, "SOLVER.TEXT_ENCODER_LR": lr,
    }))
    losses = losses_of(trainer)
    assert len(losses) == 60
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"tiny run total_loss, mean of 5: first {first:.4f} last {last:.4f}")
    assert last < 0.3 * first

    groups = {g["mdetr_group"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"backbone", "text_encoder", "transformer"}
    model = trainer.model
    ids = {k: {id(p) for p in g["params"]} for k, g in groups.items()}
    assert ids["backbone"] == {id(model.backbone.body.weight), id(model.backbone.body.bias)}
    assert ids["text_encoder"] == {id(p) for p in model.text_encoder.body.parameters()}
    assert id(model.text_encoder.resizer.weight) in ids["transformer"]
    assert all(id(p) not in set().union(*ids.values()) for p in model.backbone.stem.parameters())
    assert all(g["weight_decay"] == 1e-4 for g in groups.values())
    # The optimizer state is in every checkpoint, whatever the Detectron2 version.
    ckpt = torch.load(os.path.join(tmp_path, "model_final.pth"), map_location="cpu")
    assert "optimizer" in ckpt["trainer"]["_trainer"] and ckpt["iteration"] == 59


class _SigKill(HookBase):
    """Kills the training process (SIGKILL: no clean-up, no final checkpoint) before iteration
    ``at``."""

    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at and comm.is_main_process():
            os.kill(os.getpid(), signal.SIGKILL)


def _train(cfg_yaml, resume=False, kill_at=None, result_file=None):
    """One training run (in this process, a spawned child or a launched worker) from a dumped cfg;
    the main process writes the image ids of its batches to ``result_file``."""
    from detectron2.config import CfgNode

    register_tiny_datasets()
    cfg = tiny_cfg(".")
    cfg.merge_from_other_cfg(CfgNode.load_cfg(cfg_yaml))
    trainer = run(cfg, resume=resume, extra_hooks=[_SigKill(kill_at)] if kill_at else [])
    if result_file and comm.is_main_process():
        with open(result_file, "w") as f:
            json.dump({"seen": unwrap_model(trainer.model).seen, "start": trainer.start_iter,
                       "losses": losses_of(trainer), "world_size": comm.get_world_size()}, f)
    return trainer


def _run_killed(cfg_yaml, kill_at, processes, dist_url):
    if processes == 1:  # a child process: the test process stays alive
        # Spawned, not forked: a child forked after this process ran OpenMP-parallel torch ops
        # deadlocks in libgomp at its first parallel op (unless OMP_NUM_THREADS=1).
        child = mp.get_context("spawn").Process(target=_train, args=(cfg_yaml,),
                                                 kwargs={"kill_at": kill_at})
        child.start()
        child.join()
        assert child.exitcode == -signal.SIGKILL
    else:  # launch's parent notices the killed worker, stops the other one and raises
        with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
            launch(_train, processes, dist_url=dist_url, args=(cfg_yaml, False, kill_at))


@contextlib.contextmanager
def _held(port):
    """Hold a local TCP port like another job would (it may already be held by one)."""
    with socket.socket() as other_job:
        # Binds over a TIME_WAIT left by an earlier run; fails only if a listener holds the port.
        other_job.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other_job.bind(("127.0.0.1", port))
            other_job.listen()
        except OSError as e:
            assert e.errno == errno.EADDRINUSE
        yield


def _max_abs_diff(a, b, name):
    """Max |a - b| over every tensor of two nested states (their structures must match)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, name
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        assert a.keys() == b.keys(), name
        return max([_max_abs_diff(a[k], b[k], f"{name}.{k}") for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), name
        return max([_max_abs_diff(x, y, f"{name}[{i}]") for i, (x, y) in enumerate(zip(a, b))],
                   default=0.0)
    if isinstance(a, float):
        return abs(a - b)
    assert a == b, f"{name}: {a!r} != {b!r}"
    return 0.0


RESUME_OVERRIDES = {
    "SOLVER.CHECKPOINT_PERIOD": 3, "SOLVER.EMA.ENABLED": True, "SOLVER.EMA.DECAY": 0.9,
    "SOLVER.WARMUP_FRACTION": 0.2, "SOLVER.LR_DROP": 7,
    "SEED": -1,  # a random run seed: the checkpoint must carry it
}


def _kill_then_resume(tmp_path, overrides, processes):
    """Train 10 iterations, SIGKILL before iteration 7 (checkpoint after 5), resume to the end;
    then the same 10 iterations uninterrupted with the run seed the killed run drew. Returns both
    final checkpoints and what each run wrote (``_train``)."""
    from detectron2.engine import default_argument_parser as d2_argument_parser

    from mdetr_d2.engine import default_argument_parser  # tools/train_net.py's

    def dist_url():  # each run picks its port, as each tools/train_net.py invocation does
        return default_argument_parser().parse_args([]).dist_url

    # Detectron2's fixed per-user port, held by another job: the default must not need it.
    fixed_port = int(d2_argument_parser().parse_args([]).dist_url.rsplit(":", 1)[1])
    with _held(fixed_port):
        killed = tiny_cfg(tmp_path / "killed", **overrides)
        _run_killed(killed.dump(), 7, processes, dist_url())
        assert (tmp_path / "killed" / "last_checkpoint").read_text() == "model_0000005.pth"
        state = torch.load(tmp_path / "killed" / "model_0000005.pth")["trainer"]["hooks"]
        seed = state["TrainStreamHook"]["seed"]
        full = tiny_cfg(tmp_path / "full", **{**overrides, "SEED": seed})
        for cfg, resume, name in ((killed, True, "resumed"), (full, False, "full")):
            result_file = str(tmp_path / f"{name}.json")
            if processes == 1:
                _train(cfg.dump(), resume=resume, result_file=result_file)
            else:
                launch(_train, processes, dist_url=dist_url(),
                       args=(cfg.dump(), resume, None, result_file))
    checkpoints = [torch.load(tmp_path / run_dir / "model_final.pth", map_location="cpu")
                   for run_dir in ("full", "killed")]
    results = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("full", "resumed")]
    return seed, checkpoints, results


def _assert_resumed_equals_uninterrupted(checkpoints, results):
    full, resumed = checkpoints
    diffs = {key: _max_abs_diff(resumed[key], full[key], key)
             for key in ("model", "model_ema", "iteration")}
    trainer_full, trainer_resumed = full["trainer"], resumed["trainer"]
    diffs["optimizer"] = _max_abs_diff(trainer_resumed["_trainer"], trainer_full["_trainer"],
                                       "optimizer and grad scaler")
    diffs["hooks"] = _max_abs_diff(trainer_resumed["hooks"], trainer_full["hooks"], "hooks")
    diffs["lr"] = max(abs(g["lr"] - h["lr"]) for g, h in zip(
        trainer_resumed["_trainer"]["optimizer"]["param_groups"],
        trainer_full["_trainer"]["optimizer"]["param_groups"]))
    print(f"resume after SIGKILL at iteration 7 vs uninterrupted, max |diff|: {diffs}")
    assert set(diffs.values()) == {0.0}  # hooks: the LR schedule and the stream's state

    full_run, resumed_run = results
    assert resumed_run["start"] == 6
    assert resumed_run["seen"] == full_run["seen"][6:]  # continues the stream ...
    assert resumed_run["seen"][0] != full_run["seen"][0]  # ... instead of replaying its start
    assert resumed_run["losses"] == full_run["losses"][6:]


@pytest.mark.parametrize("workers, grouping", [(0, False), (2, False), (2, True)])
def test_resume_after_sigkill_is_bit_exact(tmp_path, workers, grouping):
    """A training process SIGKILLed after a checkpoint and resumed ends with the uninterrupted
    run's weights, EMA, optimizer, grad scaler and LR, bit for bit, having continued its data
    stream; with and without loader workers and aspect-ratio grouping."""
    overrides = {
        **RESUME_OVERRIDES, "DATALOADER.NUM_WORKERS": workers,
        "DATALOADER.ASPECT_RATIO_GROUPING": grouping,
        "SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": "fp16",  # a grad scaler to resume
        "MODEL.MDETR.DROPOUT": 0.2,  # random numbers in the training process too
    }
    _, checkpoints, results = _kill_then_resume(tmp_path, overrides, processes=1)
    _assert_resumed_equals_uninterrupted(checkpoints, results)


def test_two_processes_match_one_and_resume_after_sigkill_bit_exact(tmp_path):
    """Two CPU processes (on a free port while Detectron2's fixed one is taken): SIGKILL and resume
    are bit-exact, and the uninterrupted run matches one process with the whole batch."""
    seed, checkpoints, results = _kill_then_resume(tmp_path, RESUME_OVERRIDES, processes=2)
    _assert_resumed_equals_uninterrupted(checkpoints, results)
    assert results[0]["world_size"] == 2

    # Process r takes the stream positions k * 2 + r: the same samples and augmentations as one
    # process with the whole batch, so only float rounding differs.
    single = run(tiny_cfg(tmp_path / "one", **{**RESUME_OVERRIDES, "SEED": seed}))
    assert results[0]["losses"] == pytest.approx(losses_of(single), rel=1e-5)
    for k, v in single.model.state_dict().items():
        if k != "running_x":  # buffers are per-process (broadcast_buffers=False)
            torch.testing.assert_close(checkpoints[0]["model"][k], v, rtol=1e-5, atol=1e-6)


def test_resume_from_a_checkpoint_without_stream_state_continues_the_stream(tmp_path, caplog):
    """A checkpoint written before the stream had a state (older version): the stream continues at
    the position the iteration implies, with a warning, instead of replaying its start."""
    overrides = {**RESUME_OVERRIDES, "SEED": 4}
    full = run(tiny_cfg(tmp_path / "full", **overrides))
    killed = tiny_cfg(tmp_path / "killed", **overrides)
    with pytest.raises(KeyboardInterrupt):
        run(killed, extra_hooks=[_Interrupt(7)])
    path = tmp_path / "killed" / "model_0000005.pth"
    checkpoint = torch.load(path)
    del checkpoint["trainer"]["hooks"]["TrainStreamHook"]
    torch.save(checkpoint, path)
    resumed = run(killed, resume=True)
    assert "has no training-stream state: the data stream continues at local position 24" in (
        caplog.text)
    assert resumed.model.seen == full.model.seen[6:]


class _Interrupt(HookBase):
    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt


class _Snapshots(HookBase):
    def __init__(self):
        self.states = []

    def before_train(self):
        self.states.append(copy.deepcopy(self.trainer.model.state_dict()))

    def after_step(self):
        self.states.append(copy.deepcopy(self.trainer.model.state_dict()))


def test_ema_follows_formula_and_is_saved(tmp_path):
    decay = 0.7
    snaps = _Snapshots()
    trainer = run(
        tiny_cfg(tmp_path, **{
            "SOLVER.EMA.ENABLED": True, "SOLVER.EMA.DECAY": decay, "SOLVER.MAX_ITER": 6,
        }),
        extra_hooks=[snaps],
    )
    expected = {k: v.clone() for k, v in snaps.states[0].items()}
    for state in snaps.states[1:]:
        for k in expected:
            if expected[k].dtype.is_floating_point:
                expected[k] = decay * expected[k] + (1 - decay) * state[k]
    ema = trainer.model_ema.state_dict()
    assert "running_x" in ema and not torch.equal(ema["running_x"], snaps.states[0]["running_x"])
    for k in expected:
        torch.testing.assert_close(ema[k], expected[k], rtol=1e-6, atol=1e-7)
    assert trainer.eval_model is trainer.model_ema.module
    ckpt = torch.load(os.path.join(tmp_path, "model_final.pth"), map_location="cpu")
    for k in ema:
        assert torch.equal(ckpt["model_ema"][k], ema[k])

    # --eval-only path: the checkpoint's EMA replaces the model weights.
    weights = str(tmp_path / "model_final.pth")
    cfg = tiny_cfg(tmp_path, **{"SOLVER.EMA.ENABLED": True, "MODEL.WEIGHTS": weights})
    model = TinyTrainer.load_for_evaluation(cfg, TinyTrainer.build_model(cfg))
    for k, v in model.state_dict().items():
        assert torch.equal(v, ema[k])


class NaNTrainer(TinyTrainer):
    nan_at_call = 3


def test_non_finite_loss_names_iteration_and_term(tmp_path):
    with pytest.raises(FloatingPointError) as info:
        run(tiny_cfg(tmp_path), trainer_cls=NaNTrainer)
    message = str(info.value)
    assert "iteration=3" in message and "['loss_l1']" in message


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_runs_on_cpu(tmp_path, precision):
    trainer = run(tiny_cfg(tmp_path, **{
        "SOLVER.AMP.ENABLED": True, "SOLVER.AMP.PRECISION": precision, "SOLVER.MAX_ITER": 4,
    }))
    assert all(torch.isfinite(torch.tensor(losses_of(trainer))))
    assert ("grad_scaler" in trainer.state_dict()["_trainer"]) == (precision == "fp16")
