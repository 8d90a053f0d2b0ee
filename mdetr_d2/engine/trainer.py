"""``MDETRTrainer``: Detectron2's ``DefaultTrainer`` with MDETR's optimization (reference §8.1)."""
import inspect
import logging
import os
import weakref
from collections.abc import Sequence
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from torch import nn

from mdetr_d2.checkpoint import MDETRCheckpointer
from mdetr_d2.data import MDETRDatasetMapper
from mdetr_d2.data.train_stream import TrainDataStream, build_train_stream, load_train_set
from mdetr_d2.evaluation import build_mdetr_evaluators

from .ema import EMAHook, ModelEMA, unwrap_model
from .epochs import resolve_epoch_schedule
from .lr_scheduler import MDETR_SCHEDULES, build_mdetr_lr_scheduler
from .optimizer import build_mdetr_optimizer
from .stream_hook import TrainStreamHook
from .train_loop import MDETRSimpleTrainer

logger = logging.getLogger(__name__)


class MDETRTrainer(DefaultTrainer):
    """Trainer for every MDETR recipe.

    Differences from ``DefaultTrainer``: AdamW over three name-based parameter groups, MDETR's
    per-group schedules, global-norm gradient clipping, optional bf16/fp16 autocast on any device,
    an EMA of the whole state dict (checkpointed as ``model_ema`` and used for evaluation), the
    optimizer state in every checkpoint (Detectron2 v0.6 drops it), DDP with
    ``find_unused_parameters=True`` that also works for CPU processes, and a training stream
    (``TrainDataStream``) that skips unreadable records and, with its ``TrainStreamHook``, makes
    ``--resume`` continue the interrupted run bit for bit.
    """

    def __init__(self, cfg: CfgNode):
        # DefaultTrainer.__init__ hard-codes its inner trainer, checkpointer and DDP arguments, so
        # the same attributes are set here instead (Detectron2 v0.6 and main; see
        # DETECTRON2_VERSIONS.md).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        train_set = self.build_train_set(cfg)
        # Iteration keys left at -1 come from the epoch keys and the length of the training set.
        cfg = self.resolve_schedule(cfg, len(train_set))
        if "dataset" in inspect.signature(self.build_train_loader).parameters:
            data_loader = self.build_train_loader(cfg, dataset=train_set)
        else:  # a subclass with Detectron2's build_train_loader(cfg): it loads the set itself
            data_loader = self.build_train_loader(cfg)

        on_cuda = next(model.parameters()).device.type == "cuda"
        model = create_ddp_model(
            model,
            broadcast_buffers=False,
            # The official model leaves parameters unused in some steps (e.g. QA heads of other
            # types).
            find_unused_parameters=True,
            # device_ids must be None for CPU modules (Detectron2 passes [local_rank]).
            device_ids=[comm.get_local_rank()] if on_cuda else None,
        )
        # After the DDP wrap, which synchronizes the initial weights of every rank.
        self.model_ema: Optional[ModelEMA] = (
            ModelEMA(model, cfg.SOLVER.EMA.DECAY) if cfg.SOLVER.EMA.ENABLED else None
        )
        self._trainer = MDETRSimpleTrainer(
            model,
            data_loader,
            optimizer,
            clip_max_norm=cfg.SOLVER.CLIP_MAX_NORM,
            amp_precision=cfg.SOLVER.AMP.PRECISION if cfg.SOLVER.AMP.ENABLED else None,
        )
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        extra = {"model_ema": self.model_ema} if self.model_ema is not None else {}
        # MODEL.WEIGHTS (a weights-only load) takes the file's EMA weights when it has them, like
        # the official `--load`; resuming restores `model` and `model_ema` from their own entries.
        self.checkpointer = MDETRCheckpointer.from_config(
            cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), **extra
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg

        self.register_hooks(self.build_hooks())

    def train(self):
        """Run training; returns the results of the last evaluation (every evaluation runs the
        EMA weights when EMA is on), or None when none ran or on other ranks."""
        super().train()
        if comm.is_main_process():
            return getattr(self, "_last_eval_results", None)
        return None

    def resume_or_load(self, resume: bool = True):
        """Resume from the last checkpoint of OUTPUT_DIR (model, EMA, optimizer, scheduler,
        iteration, grad scaler) or load MODEL.WEIGHTS; without a restored EMA the average restarts
        from the loaded weights (official: the EMA is re-made after `--load`)."""
        if self.model_ema is not None:
            self.model_ema.loaded = False
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            # The checkpoint stores the iteration that just finished.
            self.start_iter = self.iter + 1
            logger.info(
                "Resumed from %s at iteration %d (model, %soptimizer and scheduler restored)",
                self.checkpointer.loaded_file, self.start_iter,
                "model_ema, " if self.model_ema is not None and self.model_ema.loaded else "",
            )
        elif self.cfg.MODEL.WEIGHTS:
            logger.info("Initialized from MODEL.WEIGHTS %s", self.cfg.MODEL.WEIGHTS)
        else:
            logger.info("No MODEL.WEIGHTS: training starts from the built model's initialization")
        if self.model_ema is not None and not self.model_ema.loaded:
            self.model_ema.reset(self.model)

    def state_dict(self):
        # TrainerBase's, not DefaultTrainer's: main's DefaultTrainer.load_state_dict requires
        # "_trainer", which v0.6 checkpoints lack; v0.6's DefaultTrainer never saves it (no
        # optimizer state).
        ret = TrainerBase.state_dict(self)
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("Checkpoint without optimizer state (v0.6 trainer?): fresh AdamW.")

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluated during training: the EMA when enabled (official), else the model."""
        return self.model_ema.module if self.model_ema is not None else self.model

    def build_hooks(self):
        cfg = self.cfg
        ret = [hooks.IterationTimer(), hooks.LRScheduler()]
        if self.model_ema is not None:
            ret.append(EMAHook(self.model_ema))  # before checkpointing and evaluation
        if isinstance(self.data_loader, TrainDataStream):  # every process, before checkpointing
            ret.append(TrainStreamHook(self.data_loader, cfg.SOLVER.CHECKPOINT_PERIOD))
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.eval_model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return ret

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_mdetr_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        if cfg.SOLVER.LR_SCHEDULER_NAME in MDETR_SCHEDULES:
            return build_mdetr_lr_scheduler(cfg, optimizer)
        return super().build_lr_scheduler(cfg, optimizer)  # Detectron2's own schedules

    @classmethod
    def build_mapper(cls, cfg: CfgNode, is_train: bool):
        """The mapper of both loaders."""
        return MDETRDatasetMapper(cfg, is_train)

    @classmethod
    def build_train_set(cls, cfg: CfgNode):
        """The dataset dicts of DATASETS.TRAIN, concatenated (like the official ConcatDataset):
        a ``TrainingSet`` that knows where each dataset starts, to name bad records."""
        dicts = load_train_set(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        logger.info("Training set %s: %d datapoints", ", ".join(cfg.DATASETS.TRAIN), len(dicts))
        return dicts

    @classmethod
    def resolve_schedule(cls, cfg: CfgNode, num_datapoints: int) -> CfgNode:
        """``cfg`` with its epoch-based iteration keys resolved (:mod:`mdetr_d2.engine.epochs`)."""
        resolved = resolve_epoch_schedule(cfg, num_datapoints, comm.get_world_size())
        logger.info("Schedule: %s", resolved.describe())
        return resolved.apply(cfg)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode, dataset=None) -> TrainDataStream:
        """The resumable training stream, sampled uniformly over the (concatenated) training sets
        like the official ConcatDataset, with the bad-record policy; ``dataset`` (from
        :meth:`build_train_set`) saves loading DATASETS.TRAIN a second time."""
        return build_train_stream(cfg, cls.build_mapper(cfg, True), dataset=dataset)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        """The evaluation loader; unless MODEL.MDETR.CLASS_PROMPTS.NAMES is set, every input also
        carries the dataset's ``thing_classes`` as ``classes``, so that images without a caption are
        detected against the class list of the dataset being evaluated."""
        loader = build_detection_test_loader(cfg, dataset_name, mapper=cls.build_mapper(cfg, False))
        return with_dataset_classes(loader, dataset_name, cfg.MODEL.MDETR.CLASS_PROMPTS.NAMES)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_mdetr_evaluators(cfg, dataset_name, output_folder)

    @classmethod
    def load_for_evaluation(cls, cfg: CfgNode, model: nn.Module, resume: bool = False) -> nn.Module:
        """Load weights into ``model`` for ``--eval-only``: MODEL.WEIGHTS, or with ``resume`` the
        last checkpoint of OUTPUT_DIR (see :func:`load_weights_for_evaluation`)."""
        return load_weights_for_evaluation(
            model, cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR, cfg.MODEL.MDETR.WEIGHTS_KEY, resume,
            skip_mismatched=cfg.MODEL.MDETR.SKIP_MISMATCHED_WEIGHTS,
        )


def load_weights_for_evaluation(
    model: nn.Module, weights: str, output_dir: str, weights_key: str = "model_ema",
    resume: bool = False, skip_mismatched: Sequence[str] = (),
) -> nn.Module:
    """Load ``weights`` (a file or ``mdetr://<name>``), or with ``resume`` the last checkpoint of
    ``output_dir``, into ``model``. Either way the file's ``model_ema`` is used when it has one and
    ``weights_key`` is "model_ema" (official evaluation uses the EMA). ``skip_mismatched``: see
    :class:`MDETRCheckpointer`."""
    checkpointer = MDETRCheckpointer(model, output_dir, weights_key=weights_key,
                                     skip_mismatched=skip_mismatched)
    # A weights-only load (no resume) already picks model_ema; a resume load leaves it in `rest`.
    rest = checkpointer.resume_or_load(weights, resume=resume)
    if weights_key == "model_ema" and isinstance(rest, dict) and "model_ema" in rest:
        logger.info("Evaluating the checkpoint's EMA weights (model_ema).")
        unwrap_model(model).load_state_dict(rest["model_ema"])
    return model


def with_dataset_classes(loader, dataset_name: str, fixed_classes: Sequence[str] = ()):
    """``loader``, whose caption-less inputs also carry the ``thing_classes`` of ``dataset_name``
    as ``classes`` (class-prompt detection against the dataset being evaluated); as is when the
    model has a fixed class list (``fixed_classes``, MODEL.MDETR.CLASS_PROMPTS.NAMES) or the
    dataset has no classes. Call it after building the loader: loading a COCO-format dataset is
    what sets its thing_classes."""
    classes = MetadataCatalog.get(dataset_name).get("thing_classes")
    if classes and not fixed_classes:
        return WithClasses(loader, classes)
    return loader


class WithClasses:
    """A test loader whose inputs without a ``caption`` also carry ``classes`` (class-prompt
    detection)."""

    def __init__(self, loader, classes):
        self.loader = loader
        self.classes = tuple(classes)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            for x in batch:
                if x.get("caption") is None:
                    x.setdefault("classes", self.classes)
            yield batch
