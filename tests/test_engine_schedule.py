"""MDETR's optimizer groups and LR schedules (in iterations) against the official rules (§8.1)."""
import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine import (
    build_mdetr_lr_scheduler,
    build_mdetr_optimizer,
    param_group_of,
)

BASE = {"transformer": 1e-4, "backbone": 1e-5, "text_encoder": 5e-5}


class _Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"stem": nn.Linear(2, 2), "body": nn.Linear(2, 2)})
        self.backbone["stem"].requires_grad_(False)
        self.text_encoder = nn.ModuleDict({"body": nn.Linear(2, 2), "resizer": nn.Linear(2, 2)})
        self.head = nn.Linear(2, 2)


def _cfg(**solver):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.SOLVER.BASE_LR = BASE["transformer"]
    cfg.SOLVER.BACKBONE_LR = BASE["backbone"]
    cfg.SOLVER.TEXT_ENCODER_LR = BASE["text_encoder"]
    for k, v in solver.items():
        cfg.SOLVER[k] = v
    return cfg


def test_param_group_names():
    assert param_group_of("backbone.0.body.layer2.0.conv1.weight") == "backbone"
    name = "text_encoder.body.encoder.layer.0.attention.self.query.weight"
    assert param_group_of(name) == "text_encoder"
    assert param_group_of("text_encoder.resizer.fc.weight") == "transformer"
    assert param_group_of("transformer.encoder.layers.0.linear1.weight") == "transformer"
    assert param_group_of("detector.backbone.res5.conv.weight") == "backbone"  # nested detector
    assert param_group_of("my_backbone_proj.weight") == "transformer"


def test_equal_lrs_keep_three_groups():
    # RefCOCO fine-tuning: backbone and text encoder share 1e-5 but follow different schedules.
    cfg = _cfg()
    cfg.SOLVER.TEXT_ENCODER_LR = cfg.SOLVER.BACKBONE_LR = 1e-5
    model = _Named()
    opt = build_mdetr_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    groups = {g["mdetr_group"]: g for g in opt.param_groups}
    assert {k: len(g["params"]) for k, g in groups.items()} == {
        "backbone": 2, "text_encoder": 2, "transformer": 4,
    }
    assert all(g["weight_decay"] == 1e-4 for g in opt.param_groups)


def _official_lrs(schedule, ipe, epochs, lr_drop, fraction=0.01):
    """LR of every optimizer step, written the way the official training loop runs (epochs, then set
    the LR after each step from that step's index)."""
    import bisect

    n = ipe * epochs
    n_warm = round(fraction * n)
    lrs, current = [], dict(BASE)
    for step in range(n):
        epoch = step // ipe
        lrs.append(dict(current))
        if step < n_warm:
            linear = step / max(1, n_warm)
        else:
            linear = max(0.0, (n - step) / max(1, n - n_warm))
        if schedule == "step":
            gamma = text = 0.1 ** (epoch // lr_drop)
        elif schedule == "multistep":
            gamma = text = 0.5 ** bisect.bisect_right(list(range(lr_drop, epochs, 50)), epoch)
        elif schedule == "linear_with_warmup":
            gamma, text = 0.1 ** (epoch // lr_drop), linear
        else:
            gamma = text = linear
        current = {"transformer": BASE["transformer"] * gamma, "backbone": BASE["backbone"] * gamma,
                   "text_encoder": BASE["text_encoder"] * text}
    return lrs


@pytest.mark.parametrize(
    "schedule", ["linear_with_warmup", "step", "multistep", "all_linear_with_warmup"]
)
def test_schedules_match_official(schedule):
    # 2 iterations per epoch, 130 epochs, drop at epoch 12: "step" drops every 24 iterations,
    # "multistep" at epochs 12, 62, 112; 5 % warm-up = 13 iterations.
    ipe, epochs, lr_drop = 2, 130, 12
    cfg = _cfg(LR_SCHEDULER_NAME=schedule, MAX_ITER=ipe * epochs, LR_DROP=ipe * lr_drop,
               LR_DROP_PERIOD=ipe * 50, WARMUP_FRACTION=0.05)
    opt = build_mdetr_optimizer(cfg, _Named())
    sched = build_mdetr_lr_scheduler(cfg, opt)
    expected = _official_lrs(schedule, ipe, epochs, lr_drop, fraction=0.05)
    for it in range(cfg.SOLVER.MAX_ITER):  # as the LRScheduler hook: read, step, then schedule
        got = {g["mdetr_group"]: g["lr"] for g in opt.param_groups}
        assert got == pytest.approx(expected[it], rel=1e-12), (schedule, it)
        opt.step()
        sched.step()


def test_default_schedule_at_chosen_iterations():
    cfg = _cfg(MAX_ITER=1000, LR_DROP=700)  # warm-up round(0.01 * 1000) = 10 iterations
    opt = build_mdetr_optimizer(cfg, _Named())
    sched = build_mdetr_lr_scheduler(cfg, opt)
    seen = {}
    for it in range(1000):
        seen[it] = {g["mdetr_group"]: g["lr"] for g in opt.param_groups}
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(BASE)  # the first step runs at the base LRs
    assert seen[1]["text_encoder"] == 0.0  # then the warm-up starts from step 0
    assert seen[6]["text_encoder"] == pytest.approx(5e-5 * 5 / 10)
    assert seen[11]["text_encoder"] == pytest.approx(5e-5 * 990 / 990)
    # The drop at step 700 shows one iteration later (official timing).
    assert seen[700] == pytest.approx(
        {"transformer": 1e-4, "backbone": 1e-5, "text_encoder": 5e-5 * 301 / 990}
    )
    assert seen[701] == pytest.approx(
        {"transformer": 1e-5, "backbone": 1e-6, "text_encoder": 5e-5 * 300 / 990}
    )
    assert seen[999]["text_encoder"] == pytest.approx(5e-5 * 2 / 990)
