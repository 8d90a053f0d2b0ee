"""MDETRTrainer end to end on CPU with a tiny stand-in model (no MDETR model, mapper or evaluator
needed).

The stand-in has the parameter names the optimizer groups by (``backbone.*``,
``text_encoder.body.*``, ``text_encoder.resizer.*``, a head), a frozen parameter and a buffer
updated in training, and returns a dict of already-weighted losses, like the real model.
"""
import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase
from torch import nn

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine import MDETRTrainer, add_mdetr_solver_config, launch

TINY_DATA = "mdetr_engine_tiny_train"
CONST_DATA = "mdetr_engine_const_train"


def _tiny_dicts(constant: bool):
    gen = torch.Generator().manual_seed(0)
    w_x, w_t = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
    dicts = []
    for i in range(16):
        x, t = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
        if constant:  # every sample the same: batches do not depend on the sampling order
            x, t = torch.linspace(-1, 1, 6), torch.linspace(1, -1, 4)
        y = float(w_x @ x + w_t @ t) / 4
        dicts.append({"image_id": i, "x": x.tolist(), "t": t.tolist(), "y": y})
    return dicts


def register_tiny_datasets():
    for name, constant in ((TINY_DATA, False), (CONST_DATA, True)):
        if name not in DatasetCatalog.list():
            DatasetCatalog.register(name, lambda c=constant: _tiny_dicts(c))


def tiny_mapper(d):
    return {k: torch.tensor(d[k]) for k in ("x", "t", "y")}


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
    """Stand-in for MDETR: regression of ``y`` from an "image" ``x`` and a "caption" ``t``."""

    def __init__(self, nan_at_call: int = -1):
        super().__init__()
        self.backbone = _Backbone()
        self.text_encoder = _TextEncoder()
        self.head = nn.Linear(8, 1)
        self.register_buffer("running_x", torch.zeros(6))
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, batched_inputs):
        x = torch.stack([d["x"] for d in batched_inputs])
        t = torch.stack([d["t"] for d in batched_inputs])
        y = torch.stack([d["y"] for d in batched_inputs])
        hidden = F.relu(self.backbone.body(self.backbone.stem(x)))
        hidden = hidden + self.text_encoder.resizer(F.relu(self.text_encoder.body(t)))
        pred = self.head(hidden).squeeze(-1)
        if not self.training:
            return [{"pred": p} for p in pred]
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
        torch.manual_seed(cfg.SEED)
        return TinyMDETR(cls.nan_at_call).to(cfg.MODEL.DEVICE)

    @classmethod
    def build_train_loader(cls, cfg):
        # A seeded sampler (v0.6's cfg-built one draws a random seed) so that runs can be compared.
        dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
        return build_detection_train_loader(
            dicts, mapper=tiny_mapper, sampler=TrainingSampler(len(dicts), seed=cfg.SEED),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH, aspect_ratio_grouping=False, num_workers=0,
        )

    def build_writers(self):
        return []


def tiny_cfg(output_dir, **overrides):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    add_mdetr_solver_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(output_dir)
    os.makedirs(output_dir, exist_ok=True)  # default_setup's job in tools/train_net.py
    cfg.SEED = 0
    cfg.DATASETS.TRAIN = (TINY_DATA,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 1e-2
    cfg.MODEL.MDETR.LR_BACKBONE = 5e-3
    cfg.MODEL.MDETR.LR_TEXT_ENCODER = 5e-3
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.LR_DROP = 8
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.TEST.EVAL_PERIOD = 0
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
        "MODEL.MDETR.LR_BACKBONE": lr, "MODEL.MDETR.LR_TEXT_ENCODER": lr,
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


class _Kill(HookBase):
    """Simulates a killed job: dies before a given iteration, after the last periodic checkpoint."""

    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_resume_matches_uninterrupted(tmp_path):
    overrides = {
        "DATASETS.TRAIN": (CONST_DATA,), "SOLVER.CHECKPOINT_PERIOD": 3, "SOLVER.EMA.ENABLED": True,
        "SOLVER.EMA.DECAY": 0.9, "SOLVER.WARMUP_FRACTION": 0.2, "SOLVER.LR_DROP": 7,
    }
    full = run(tiny_cfg(tmp_path / "full", **overrides))

    cfg = tiny_cfg(tmp_path / "killed", **overrides)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, extra_hooks=[_Kill(7)])  # iterations 0-6 ran, last checkpoint after iteration 5
    assert (tmp_path / "killed" / "model_0000005.pth").is_file()
    resumed = run(cfg, resume=True)
    assert resumed.start_iter == 6

    assert losses_of(resumed) == pytest.approx(losses_of(full)[6:], rel=0, abs=0)
    max_diff = 0.0
    for ours, ref in (
        (resumed.model.state_dict(), full.model.state_dict()),
        (resumed.model_ema.state_dict(), full.model_ema.state_dict()),
    ):
        assert ours.keys() == ref.keys()
        for k in ref:
            max_diff = max(max_diff, (ours[k] - ref[k]).abs().max().item())
    print(f"resume vs uninterrupted: max |diff| over weights and EMA = {max_diff}")
    assert max_diff == 0.0
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [
        g["lr"] for g in full.optimizer.param_groups
    ]
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch == 10
    for p_ours, p_ref in zip(resumed.model.parameters(), full.model.parameters()):
        s_ours, s_ref = resumed.optimizer.state.get(p_ours), full.optimizer.state.get(p_ref)
        assert (s_ours is None) == (s_ref is None)
        if s_ref is not None:
            assert torch.equal(s_ours["exp_avg_sq"], s_ref["exp_avg_sq"])


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


def _ddp_worker(cfg_yaml, result_file):
    from detectron2.config import CfgNode
    from detectron2.utils import comm

    register_tiny_datasets()
    cfg = tiny_cfg(".")
    cfg.merge_from_other_cfg(CfgNode.load_cfg(cfg_yaml))
    trainer = run(cfg)
    assert comm.get_world_size() == 2 and comm.get_local_rank() in (0, 1)
    if comm.is_main_process():
        weights = {k: v.tolist() for k, v in trainer.model.module.state_dict().items()}
        with open(result_file, "w") as f:
            json.dump({"losses": losses_of(trainer), "weights": weights}, f)


def test_two_processes_match_one(tmp_path):
    overrides = {"SOLVER.MAX_ITER": 6, "SOLVER.LR_DROP": 4}
    single = run(tiny_cfg(tmp_path / "one", **overrides))

    cfg = tiny_cfg(tmp_path / "two", **overrides)
    result_file = str(tmp_path / "two.json")
    launch(_ddp_worker, 2, dist_url="auto", args=(cfg.dump(), result_file))
    with open(result_file) as f:
        result = json.load(f)
    assert result["losses"] == pytest.approx(losses_of(single), rel=1e-5)
    for k, v in single.model.state_dict().items():
        if k != "running_x":  # buffers are per-process (broadcast_buffers=False)
            torch.testing.assert_close(torch.tensor(result["weights"][k]), v, rtol=1e-5, atol=1e-6)
