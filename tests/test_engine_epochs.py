"""Schedules stated in epochs: the official sampler arithmetic, recipe by recipe, and its rules."""
import math
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine import iterations_per_epoch, resolve_epoch_schedule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe(name: str, *opts):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.merge_from_list(list(opts))
    return cfg


def official_iterations(num_datapoints: int, world_size: int, per_process: int) -> int:
    """What the official loader gives: DistributedSampler pads to a multiple of W (total_size =
    ceil(D / W) * W, num_samples = total_size / W per process) and BatchSampler(drop_last=True)."""
    num_samples = math.ceil(num_datapoints / world_size)
    batches = 0
    taken = 0
    while taken + per_process <= num_samples:  # drop_last: only full batches
        taken += per_process
        batches += 1
    return batches


@pytest.mark.parametrize("d", [1, 7, 8, 9, 63, 64, 65, 1000, 120_624, 310_816])
@pytest.mark.parametrize("w,b", [(1, 1), (1, 64), (2, 4), (8, 2), (32, 2), (3, 5)])
def test_iterations_per_epoch_is_the_official_sampler_count(d, w, b):
    if official_iterations(d, w, b) == 0:
        with pytest.raises(ValueError, match="no full batch"):
            iterations_per_epoch(d, w, w * b)
        return
    assert iterations_per_epoch(d, w, w * b) == official_iterations(d, w, b)


def test_epoch_chunks_count_one_chunk():
    # torch.chunk(arange(D), K): chunks of ceil(D / K); an "epoch" is one chunk.
    d, k = 16_317_209, 25
    assert iterations_per_epoch(d, 32, 128, epoch_chunks=k) == official_iterations(
        math.ceil(d / k), 32, 4) == 5099


def test_batch_must_split_over_processes():
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        iterations_per_epoch(100, 3, 8)


@pytest.mark.parametrize("name,d,w,expected", [
    # (MAX_ITER, LR_DROP, CHECKPOINT_PERIOD, EVAL_PERIOD): the numbers the configs used to carry,
    # computed by hand for the official process counts.
    ("mdetr_refcoco.yaml", 120_624, 2, (75_390, 45_234, 15_078, 15_078)),
    ("mdetr_refcoco+.yaml", 120_191, 2, (75_120, 45_072, 15_024, 15_024)),
    ("mdetr_refcocog.yaml", 80_512, 2, (30_192, 20_128, 10_064, 10_064)),
    ("mdetr_flickr_merged.yaml", 148_915, 2, (93_070, 55_842, 18_614, 18_614)),
    ("mdetr_phrasecut_step1.yaml", 310_816, 32, (48_560, 53_416, 4_856, 4_856)),
    ("mdetr_phrasecut_step2.yaml", 310_816, 32, (169_960, 121_400, 4_856, 4_856)),
    ("mdetr_gqa.yaml", 16_317_209, 32, (637_375, 764_850, 5_099, 5_099)),
    ("mdetr_clevr_step2.yaml", 699_989, 1, (328_110, 218_740, 10_937, 10_937)),
    ("mdetr_clevr_humans.yaml", 17_817, 1, (16_680, 11_120, 278, 278)),
    ("mdetr_clevr_cogent.yaml", 699_960, 1, (328_080, 218_720, 10_936, 10_936)),
    ("mdetr_lvis10.yaml", 100_000, 32, (234_300, 187_440, 1_562, 7_810)),
    ("pretrain/mdetr_pretrain_r101.yaml", 1_300_000, 32, (812_480, 710_920, 20_312, 20_312)),
])
def test_recipes_resolve_to_the_official_iterations(name, d, w, expected):
    resolved = resolve_epoch_schedule(recipe(name), d, w)
    v = resolved.values
    assert (v["SOLVER.MAX_ITER"], v["SOLVER.LR_DROP"], v["SOLVER.CHECKPOINT_PERIOD"],
            v["TEST.EVAL_PERIOD"]) == expected
    assert resolved.sources["SOLVER.MAX_ITER"].endswith("epochs")


def test_resolution_follows_the_number_of_processes():
    cfg = recipe("mdetr_refcoco.yaml")
    one = resolve_epoch_schedule(cfg, 120_624, 1)  # 8 images on one process
    eight = resolve_epoch_schedule(cfg, 120_624, 8)  # 1 image on each of 8 processes
    assert one.iters_per_epoch == 120_624 // 8 == 15_078
    assert eight.iters_per_epoch == math.ceil(120_624 / 8) == 15_078
    assert resolve_epoch_schedule(cfg, 120_625, 8).iters_per_epoch == 15_079  # padding


def test_explicit_iteration_keys_win_and_the_result_is_applied():
    cfg = recipe("mdetr_refcoco.yaml", "SOLVER.MAX_ITER", "1000", "TEST.EVAL_PERIOD", "0")
    cfg.freeze()
    resolved = resolve_epoch_schedule(cfg, 120_624, 2)
    assert resolved.values["SOLVER.MAX_ITER"] == 1000
    assert resolved.sources["SOLVER.MAX_ITER"] == "explicit"
    assert resolved.values["TEST.EVAL_PERIOD"] == 0
    assert resolved.values["SOLVER.LR_DROP"] == 45_234  # still from epochs
    applied = resolved.apply(cfg)
    assert applied.is_frozen()
    assert (applied.SOLVER.MAX_ITER, applied.SOLVER.LR_DROP) == (1000, 45_234)
    assert cfg.SOLVER.LR_DROP == -1  # the input config is untouched
    assert "SOLVER.MAX_ITER = 1000 (explicit)" in resolved.describe()


def test_iteration_config_without_epochs_needs_no_dataset_length():
    cfg = recipe("synthetic/mdetr_synthetic.yaml")
    resolved = resolve_epoch_schedule(cfg, 1, 1)  # D is not used: every key is explicit
    assert resolved.iters_per_epoch is None
    assert resolved.values["SOLVER.MAX_ITER"] == cfg.SOLVER.MAX_ITER > 0


def test_resolution_errors_name_the_keys():
    with pytest.raises(ValueError, match="SOLVER.EPOCHS is not set"):
        resolve_epoch_schedule(recipe("Base-MDETR.yaml"), 100, 1)
    with pytest.raises(ValueError, match="SOLVER.CHECKPOINT_PERIOD_EPOCHS"):
        resolve_epoch_schedule(recipe("mdetr_refcoco.yaml", "SOLVER.CHECKPOINT_PERIOD_EPOCHS", "0"),
                               100, 1)
    with pytest.raises(ValueError, match="no full batch"):
        resolve_epoch_schedule(recipe("mdetr_clevr_step1.yaml"), 63, 1)


def test_multistep_period_follows_its_epoch_key():
    cfg = recipe("mdetr_refcoco.yaml", "SOLVER.LR_SCHEDULER_NAME", "multistep")
    assert resolve_epoch_schedule(cfg, 120_624, 2).values["SOLVER.LR_DROP_PERIOD"] == 50 * 15_078
    other = resolve_epoch_schedule(recipe("mdetr_refcoco.yaml"), 120_624, 2)
    assert other.values["SOLVER.LR_DROP_PERIOD"] == 0  # unused by linear_with_warmup
