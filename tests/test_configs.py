"""Every YAML under configs/ parses with get_cfg() + add_mdetr_config."""
from pathlib import Path

import pytest
from detectron2.config import get_cfg

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine.lr_scheduler import MDETR_SCHEDULES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
YAMLS = sorted(p for p in CONFIGS.rglob("*.yaml"))


def load(path):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(str(path))
    return cfg


def test_recipe_configs_exist():
    names = {p.relative_to(CONFIGS).as_posix() for p in YAMLS}
    for expected in [
        "Base-MDETR.yaml", "pretrain/mdetr_pretrain_r101.yaml", "pretrain/mdetr_pretrain_eb3.yaml",
        "pretrain/mdetr_pretrain_eb5.yaml", "mdetr_refcoco.yaml", "mdetr_refcoco+.yaml",
        "mdetr_refcocog.yaml", "mdetr_flickr_merged.yaml", "mdetr_phrasecut_step1.yaml",
        "mdetr_phrasecut_step2.yaml", "mdetr_gqa.yaml", "mdetr_clevr_step1.yaml",
        "mdetr_clevr_step2.yaml", "mdetr_clevr_humans.yaml", "mdetr_clevr_cogent.yaml",
        "mdetr_clevr_cogent_step1.yaml", "mdetr_clevr_ref.yaml", "mdetr_lvis1.yaml",
        "mdetr_lvis10.yaml", "mdetr_lvis100.yaml",
    ]:
        assert expected in names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_parses(path):
    cfg = load(path)
    if path.parent.name == "synthetic" or path.name.startswith("Base-"):
        return
    assert cfg.SOLVER.LR_SCHEDULER_NAME in MDETR_SCHEDULES
    assert cfg.DATASETS.TRAIN and cfg.SOLVER.IMS_PER_BATCH > 0
    assert cfg.OUTPUT_DIR.startswith("output/")
    # The official schedule in epochs; iterations follow from the data and the processes.
    assert cfg.SOLVER.EPOCHS > 0 and cfg.SOLVER.MAX_ITER == -1 and cfg.SOLVER.LR_DROP == -1
    assert cfg.SOLVER.CHECKPOINT_PERIOD == -1 and cfg.TEST.EVAL_PERIOD == -1


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_no_placeholder_numbers(path):
    """Dataset sizes are never guessed in a recipe: the schedule is resolved from the real data."""
    assert "PLACEHOLDER" not in path.read_text()


def test_clevr_recipes_use_the_clevr_augmentation():
    """CLEVR recipes train at 256-384 (max 512) and evaluate at the native 480x320 (§6.2), not with
    the natural-image chain (480-800, max 1333; evaluation at 800)."""
    from mdetr_d2.data import MDETRDatasetMapper
    from mdetr_d2.data.transforms import MDETRResize

    clevr = [p for p in YAMLS if load(p).DATASETS.TRAIN
             and all(n.startswith("clevr") for n in load(p).DATASETS.TRAIN)]
    assert len(clevr) == 6
    for path in clevr:
        cfg = load(path)
        assert cfg.INPUT.MDETR.KIND == "clevr", path.name
        assert MDETRDatasetMapper(cfg, is_train=False).augmentations.augs == [], path.name
        train = MDETRDatasetMapper(cfg, is_train=True).augmentations.augs
        resize = train[-1].first.augs[0]  # the resize-only branch of RandomSelect
        assert isinstance(resize, MDETRResize), path.name
        assert tuple(resize.scales) == (256, 288, 320, 352, 384) and resize.max_size == 512


def test_clevr_humans_trains_without_detection():
    cfg = load(CONFIGS / "mdetr_clevr_humans.yaml")
    assert cfg.MODEL.MDETR.NO_DETECTION and cfg.MODEL.MDETR.QA_HEAD == "clevr"


def test_recipe_values():
    refcoco = load(CONFIGS / "mdetr_refcoco.yaml")
    s = refcoco.SOLVER
    assert (s.IMS_PER_BATCH, s.EPOCHS, s.LR_DROP_EPOCHS) == (8, 5, 3)
    assert (s.BASE_LR, s.BACKBONE_LR, s.TEXT_ENCODER_LR) == (5e-5, 1e-5, 1e-5)
    assert refcoco.SOLVER.EMA.ENABLED and refcoco.SOLVER.CLIP_MAX_NORM == 0.1
    eb3 = load(CONFIGS / "pretrain" / "mdetr_pretrain_eb3.yaml")
    assert eb3.SOLVER.BACKBONE_LR == 5e-5 and eb3.SOLVER.IMS_PER_BATCH == 64
    step2 = load(CONFIGS / "mdetr_phrasecut_step2.yaml")
    assert step2.MODEL.MDETR.FREEZE_DETECTOR and not step2.SOLVER.EMA.ENABLED
    gqa = load(CONFIGS / "mdetr_gqa.yaml")
    assert gqa.SOLVER.LR_DROP_EPOCHS > gqa.SOLVER.EPOCHS and gqa.SOLVER.IMS_PER_BATCH == 128
    assert gqa.SOLVER.EPOCH_CHUNKS == 25
    clevr = load(CONFIGS / "mdetr_clevr_humans.yaml")
    assert clevr.MODEL.RESNETS.DEPTH == 18 and clevr.MODEL.MDETR.NUM_QUERIES == 25


def test_config_datasets_are_registered():
    import mdetr_d2.data.datasets  # noqa: F401  registers the builtin names at import (an error fails)
    from detectron2.data import DatasetCatalog

    from mdetr_synthetic import default_synthetic_root, register_synthetic

    # configs/synthetic/: the example world, registered by the training tools (not the library).
    register_synthetic(default_synthetic_root(), keep_existing=True)

    registered = set(DatasetCatalog.list())
    for path in YAMLS:
        cfg = load(path)
        missing = [n for n in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST) if n not in registered]
        assert not missing, f"{path.name}: unregistered datasets {missing}"


@pytest.mark.parametrize("old, new", [("MODEL.MDETR.LR_BACKBONE", "SOLVER.BACKBONE_LR"),
                                      ("MODEL.MDETR.LR_TEXT_ENCODER", "SOLVER.TEXT_ENCODER_LR")])
def test_renamed_key_fails_naming_its_new_key(old, new, tmp_path):
    """A config written for the old key names is an error that says where the key went, from a
    file (through _BASE_ too) and from the command line; clones keep the check."""
    leaf = old.rsplit(".", 1)[1]
    (tmp_path / "old.yaml").write_text(
        '_BASE_: "{}"\nMODEL:\n  MDETR:\n    {}: 1.0e-5\n'.format(CONFIGS / "Base-MDETR.yaml", leaf))
    with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
        load(tmp_path / "old.yaml")
    cfg = load(CONFIGS / "mdetr_refcoco.yaml")
    for target in (cfg, cfg.clone()):
        with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
            target.merge_from_list([old, "1e-5"])
    assert leaf not in cfg.MODEL.MDETR
    add_mdetr_config(cfg)  # a second call on the same config registers the renames once
