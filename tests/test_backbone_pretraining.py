"""The synthetic world's backbone pre-training (its ImageNet step): it learns, loads into MDETR, is cached."""
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from mdetr_d2 import add_mdetr_config
from mdetr_synthetic import generate_synthetic_dataset
from mdetr_synthetic.backbone_pretraining import pretrain_backbone

CONFIG = "configs/synthetic/mdetr_synthetic.yaml"


def _synthetic_cfg(text_encoder: str):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.MDETR.TEXT_ENCODER.NAME = text_encoder
    return cfg


def test_pretrained_backbone_names_colours_and_loads_into_the_synthetic_mdetr(tmp_path, tiny_text_encoder):
    world = tmp_path / "world"
    generate_synthetic_dataset(world, num_train=8, num_val=1, num_test=1, text_encoder=False,
                               progress=False)
    cfg = _synthetic_cfg(tiny_text_encoder)
    path = pretrain_backbone(cfg, world, steps=120, batch_size=8)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    # The 8 scenes' colours are learnt (chance: 1/6), from the cell under each object's centre.
    assert saved["pretraining"]["colour_accuracy"] > 0.9
    assert saved["pretraining"]["shape_accuracy"] > 0.5

    model = build_model(cfg)
    backbone_keys = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(saved["model"]) == backbone_keys
    DetectionCheckpointer(model).load(str(path))  # MODEL.WEIGHTS's load
    for name, value in saved["model"].items():
        assert torch.equal(model.state_dict()[name], value), name

    # Same arguments, world and backbone: the file is reused; another backbone width retrains.
    mtime = path.stat().st_mtime_ns
    assert pretrain_backbone(cfg, world, steps=120, batch_size=8) == path
    assert path.stat().st_mtime_ns == mtime
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 8
    pretrain_backbone(cfg, world, steps=2, batch_size=8)
    assert torch.load(path, map_location="cpu", weights_only=True)["model"][
        "backbone.res2.0.conv1.weight"].shape[0] == 8
