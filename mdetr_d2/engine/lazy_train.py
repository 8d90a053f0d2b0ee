"""Training and evaluation from a LazyConfig recipe (``tools/lazyconfig_train_net.py``).

The same machinery as :class:`MDETRTrainer` (the MDETR train step with global-norm clipping and
optional autocast, the EMA hook, the checkpointer that reads official files and prefers EMA weights,
the DDP arguments that work for CPU processes), assembled from the instantiated recipe the way
Detectron2's own ``lazyconfig_train_net.py`` assembles its trainer.
"""
from __future__ import annotations

import logging
from collections import OrderedDict

from detectron2.config import instantiate
from detectron2.data.common import DatasetFromList
from detectron2.engine import create_ddp_model, default_writers, hooks
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import MDETRCheckpointer
from ..data.train_stream import TrainDataStream
from .ema import EMAHook, ModelEMA, unwrap_model
from .epochs import ResolvedSchedule, resolve_iterations
from .stream_hook import TrainStreamHook
from .train_loop import MDETRSimpleTrainer
from .trainer import with_dataset_classes

logger = logging.getLogger(__name__)

__all__ = ["do_test", "do_train", "resolve_lazy_schedule"]


def resolve_lazy_schedule(cfg: DictConfig, num_datapoints: int, world_size: int) -> ResolvedSchedule:
    """Resolve, in place, the iteration values of a lazy recipe left at -1 from
    ``train.schedule_in_epochs`` (the yacs rule, :func:`mdetr_d2.engine.epochs.resolve_iterations`;
    keys are reported under their yacs names)."""
    train, scheduler = cfg.train, cfg.lr_scheduler
    places = {  # yacs key -> (node, field, name in train.schedule_in_epochs)
        "SOLVER.MAX_ITER": (train, "max_iter", "max_iter"),
        "SOLVER.LR_DROP": (scheduler, "lr_drop", "lr_drop"),
        "SOLVER.LR_DROP_PERIOD": (scheduler, "lr_drop_period", "lr_drop_period"),
        "SOLVER.CHECKPOINT_PERIOD": (train.checkpointer, "period", "checkpoint_period"),
        "TEST.EVAL_PERIOD": (train, "eval_period", "eval_period"),
    }
    epochs = train.schedule_in_epochs
    resolved = resolve_iterations(
        {key: node[field] for key, (node, field, _) in places.items()},
        {key: epochs[name] for key, (_, _, name) in places.items()},
        num_datapoints=num_datapoints, world_size=world_size,
        images_per_batch=cfg.dataloader.train.total_batch_size,
        epoch_chunks=epochs.epoch_chunks, schedule=scheduler.schedule,
    )
    for key, (node, field, _) in places.items():
        node[field] = resolved.values[key]
    return resolved


def do_test(cfg: DictConfig, model: nn.Module) -> dict:
    """Evaluate ``model`` on every ``dataloader.test`` / ``dataloader.evaluator`` pair.

    Returns:
        ``{dataset name: {task: {metric: value}}}``.
    """
    results = OrderedDict()
    for loader_cfg, evaluator_cfg in zip(cfg.dataloader.test, cfg.dataloader.evaluator):
        name = loader_cfg.dataset.names
        # Caption-less inputs are detected against this dataset's classes, as in MDETRTrainer.
        loader = with_dataset_classes(instantiate(loader_cfg), name,
                                      unwrap_model(model).class_prompts.names)
        results[name] = inference_on_dataset(model, loader, instantiate(evaluator_cfg))
        if comm.is_main_process():
            logger.info("Evaluation results for %s in csv format:", name)
            print_csv_format(results[name])
    return results


def do_train(cfg: DictConfig, resume: bool = False) -> dict:
    """Train the recipe ``cfg`` (model, dataloader, optimizer, lr_scheduler, train).

    Args:
        resume: continue from the last checkpoint of ``train.output_dir`` (model, EMA, optimizer,
            scheduler, iteration) instead of loading ``train.init_checkpoint``.

    Returns:
        the results of the last evaluation (every ``train.eval_period`` iterations and at the end;
        the EMA weights when the EMA is on, as officially).
    """
    train = cfg.train
    # The training set once: its length resolves the schedule, then the loader samples it.
    train_set = instantiate(cfg.dataloader.train.dataset)
    logger.info("Schedule: %s", resolve_lazy_schedule(cfg, len(train_set), comm.get_world_size())
                .describe())
    if not isinstance(train_set, Dataset):  # an object, not a list, for the config node
        train_set = DatasetFromList(train_set, copy=False)
    cfg.dataloader.train.dataset = train_set
    model = instantiate(cfg.model).to(train.device)
    logger.info("Model:\n%s", model)
    cfg.optimizer.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    on_cuda = next(model.parameters()).device.type == "cuda"
    model = create_ddp_model(model, **train.ddp,
                             device_ids=[comm.get_local_rank()] if on_cuda else None)
    model_ema = ModelEMA(model, train.model_ema.decay) if train.model_ema.enabled else None
    trainer = MDETRSimpleTrainer(
        model, train_loader, optimizer, clip_max_norm=train.clip_grad.max_norm,
        amp_precision=train.amp.precision if train.amp.enabled else None,
    )
    cfg.lr_scheduler.optimizer = optimizer
    scheduler = instantiate(cfg.lr_scheduler)
    extra = {"model_ema": model_ema} if model_ema is not None else {}
    checkpointer = MDETRCheckpointer(model, train.output_dir, weights_key=train.weights_key,
                                     skip_mismatched=train.get("skip_mismatched_weights", ()),
                                     trainer=trainer, **extra)
    eval_model = model_ema.module if model_ema is not None else model
    last_results: dict = {}

    def test_and_keep_results():
        last_results.clear()
        last_results.update(do_test(cfg, eval_model))
        return last_results
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=scheduler),
        EMAHook(model_ema) if model_ema is not None else None,  # before checkpoint and eval
        # Every process, before the checkpointer: exact --resume, skipped-record summaries.
        TrainStreamHook(train_loader, train.checkpointer.period)
        if isinstance(train_loader, TrainDataStream) else None,
        hooks.PeriodicCheckpointer(checkpointer, **train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(train.eval_period, test_and_keep_results),
        hooks.PeriodicWriter(default_writers(train.output_dir, train.max_iter),
                             period=train.log_period) if comm.is_main_process() else None,
    ])
    if model_ema is not None:
        model_ema.loaded = False
    checkpointer.resume_or_load(train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    if model_ema is not None and not model_ema.loaded:
        model_ema.reset(model)  # official: the EMA restarts from the loaded weights
    trainer.train(start_iter, train.max_iter)
    return last_results
