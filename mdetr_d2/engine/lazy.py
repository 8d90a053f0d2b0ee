"""LazyConfig recipes derived from the yacs recipes: the same ``@configurable`` parts as nodes.

Detectron2's newer projects (ViTDet, MViTv2, detrex) describe a recipe as Python objects::

    model = L(MDETR)(backbone=L(MDETRResNet)(depth=101, ...), transformer=L(Transformer)(...), ...)
    dataloader.train = L(build_train_stream)(mapper=L(MDETRDatasetMapper)(...), ...)
    optimizer = L(build_mdetr_optimizer)(model=None, base_lr=1e-4, ...)
    lr_scheduler = L(build_mdetr_lr_scheduler)(optimizer=None, schedule=..., max_iter=...)
    train = dict(output_dir=..., init_checkpoint=..., max_iter=..., ...)

:func:`lazy_recipe` builds exactly that tree from a yacs recipe (``configs/*.yaml``), each node's
arguments taken from the part's own ``from_config``, so both forms of a recipe build the same model
and schedule by construction and every number stays in one place (the YAML). ``configs/lazy/``
holds one file per recipe; edit the nodes in Python (``model.transformer.num_decoder_layers = 3``)
or on the command line (``tools/lazyconfig_train_net.py ... train.max_iter=100``).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from detectron2.config import CfgNode, LazyCall as L, get_cfg
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.layers import ShapeSpec
from omegaconf import DictConfig, OmegaConf

from ..config import add_mdetr_config
from ..data import MDETRDatasetMapper, build_train_stream, load_train_set
from ..data.transforms import augmentation_args_from_config, build_mdetr_augmentation
from ..evaluation import build_mdetr_evaluators
from ..modeling.backbone import MDETREfficientNet, MDETRResNet
from ..modeling.criterion import MDETRCriterion
from ..modeling.matcher import HungarianMatcher
from ..modeling.meta_arch import MDETR
from ..modeling.scratch_backbone import scratch_resnet
from ..modeling.text_encoder import TextEncoder
from ..modeling.transformer import Transformer
from .lr_scheduler import MDETR_SCHEDULES, build_mdetr_lr_scheduler
from .optimizer import build_mdetr_optimizer

__all__ = ["lazy_recipe", "load_yacs_recipe", "model_node"]

# MODEL.BACKBONE.NAME -> the configurable part the registered builder calls.
LAZY_BACKBONES: dict[str, Callable] = {
    "build_mdetr_resnet_backbone": MDETRResNet,
    "build_mdetr_efficientnet_backbone": MDETREfficientNet,
    "build_mdetr_scratch_resnet_backbone": scratch_resnet,
}


def _node(target: Callable, cfg: CfgNode, *args: Any, **overrides: Any) -> DictConfig:
    """``L(target)(**target.from_config(cfg, *args))`` with some arguments replaced."""
    kwargs = dict(target.from_config(cfg, *args))
    kwargs.update(overrides)
    return L(target)(**kwargs)


def model_node(cfg: CfgNode) -> DictConfig:
    """The ``L(MDETR)(...)`` tree of the model ``build_model(cfg)`` builds."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in LAZY_BACKBONES:
        raise ValueError(f"MODEL.BACKBONE.NAME {name!r} has no LazyConfig form; known: "
                         f"{sorted(LAZY_BACKBONES)}")
    backbone = _node(LAZY_BACKBONES[name], cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    return L(MDETR)(
        backbone=backbone,
        text_encoder=_node(TextEncoder, cfg),
        transformer=_node(Transformer, cfg),
        criterion=_node(MDETRCriterion, cfg, matcher=_node(HungarianMatcher, cfg)),
        **MDETR.options_from_config(cfg),
    )


def _mapper_node(cfg: CfgNode, is_train: bool) -> DictConfig:
    augmentations = L(build_mdetr_augmentation)(**augmentation_args_from_config(cfg, is_train))
    # The tokenizer is the text encoder's, named once (model.text_encoder.name).
    return _node(MDETRDatasetMapper, cfg, is_train, augmentations=augmentations,
                 tokenizer_name="${model.text_encoder.name}")


def _dataloader_node(cfg: CfgNode) -> DictConfig:
    dataloader = OmegaConf.create()
    # The resumable training stream of tools/train_net.py (same order, augmentation and
    # bad-record policy), seeded by train.seed.
    dataloader.train = L(build_train_stream)(
        dataset=L(load_train_set)(
            names=list(cfg.DATASETS.TRAIN),
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        ),
        mapper=_mapper_node(cfg, True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        seed="${train.seed}",
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        max_bad_record_fraction=cfg.DATALOADER.MAX_BAD_RECORD_FRACTION,
    )
    # One test loader and one evaluator per DATASETS.TEST entry (MDETR recipes validate on several).
    dataloader.test = [
        L(build_detection_test_loader)(
            dataset=L(get_detection_dataset_dicts)(names=name, filter_empty=False),
            mapper=_mapper_node(cfg, False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        for name in cfg.DATASETS.TEST
    ]
    dataloader.evaluator = [
        _node(build_mdetr_evaluators, cfg, name, "${train.output_dir}/inference/" + name)
        for name in cfg.DATASETS.TEST
    ]
    return dataloader


def _train_node(cfg: CfgNode) -> DictConfig:
    # The keys of Detectron2's common/train.py, plus MDETR's clipping, EMA and weights choice
    # (named as detrex names them: train.clip_grad, train.model_ema).
    return OmegaConf.create({
        "output_dir": cfg.OUTPUT_DIR,
        "init_checkpoint": cfg.MODEL.WEIGHTS,
        "max_iter": cfg.SOLVER.MAX_ITER,
        "amp": {"enabled": cfg.SOLVER.AMP.ENABLED, "precision": cfg.SOLVER.AMP.PRECISION},
        "ddp": {"broadcast_buffers": False, "find_unused_parameters": True,
                "fp16_compression": False},
        "checkpointer": {"period": cfg.SOLVER.CHECKPOINT_PERIOD, "max_to_keep": 100},
        "eval_period": cfg.TEST.EVAL_PERIOD,
        # The recipe's schedule in epochs: each iteration value left at -1 (train.max_iter,
        # lr_scheduler.lr_drop / lr_drop_period, train.checkpointer.period, train.eval_period) is
        # this many epochs of the training set when training starts (mdetr_d2.engine.epochs).
        "schedule_in_epochs": {
            "max_iter": cfg.SOLVER.EPOCHS,
            "lr_drop": cfg.SOLVER.LR_DROP_EPOCHS,
            "lr_drop_period": cfg.SOLVER.LR_DROP_PERIOD_EPOCHS,
            "checkpoint_period": cfg.SOLVER.CHECKPOINT_PERIOD_EPOCHS,
            "eval_period": cfg.TEST.EVAL_PERIOD_EPOCHS,
            "epoch_chunks": cfg.SOLVER.EPOCH_CHUNKS,
        },
        "log_period": 20,
        "device": cfg.MODEL.DEVICE,
        "seed": cfg.SEED,
        "clip_grad": {"max_norm": cfg.SOLVER.CLIP_MAX_NORM},
        "model_ema": {"enabled": cfg.SOLVER.EMA.ENABLED, "decay": cfg.SOLVER.EMA.DECAY},
        "weights_key": cfg.MODEL.MDETR.WEIGHTS_KEY,
        "skip_mismatched_weights": list(cfg.MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS),
    })


def load_yacs_recipe(path: str, opts: Sequence[str] = ()) -> CfgNode:
    """``get_cfg()`` + :func:`add_mdetr_config` + the YAML recipe + ``opts`` (KEY VALUE ...)."""
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def lazy_recipe(recipe: str | CfgNode, opts: Sequence[str] = ()) -> dict[str, DictConfig]:
    """The LazyConfig form of a yacs recipe.

    Args:
        recipe: a YAML recipe path or a ready ``CfgNode``.
        opts: yacs overrides applied first (KEY VALUE ...).

    Returns:
        ``{"model", "dataloader", "optimizer", "lr_scheduler", "train"}``: the variables of a
        Detectron2 LazyConfig file. ``optimizer.model`` and ``lr_scheduler.optimizer`` are set by
        the training script; ``lr_scheduler.max_iter`` follows ``train.max_iter``.
    """
    cfg = load_yacs_recipe(recipe, opts) if isinstance(recipe, str) else recipe
    if cfg.SOLVER.LR_SCHEDULER_NAME not in MDETR_SCHEDULES:
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME {cfg.SOLVER.LR_SCHEDULER_NAME!r}: the lazy "
                         f"recipes take MDETR's schedules {MDETR_SCHEDULES}")
    optimizer = _node(build_mdetr_optimizer, cfg, None)
    lr_scheduler = _node(build_mdetr_lr_scheduler, cfg, None, max_iter="${train.max_iter}")
    return {
        "model": model_node(cfg),
        "dataloader": _dataloader_node(cfg),
        "optimizer": optimizer,
        "lr_scheduler": lr_scheduler,
        "train": _train_node(cfg),
    }
