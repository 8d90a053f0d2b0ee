"""Training keys of mdetr_d2 (optimizer, LR schedules, clipping, EMA, mixed precision).

Every schedule length is in **iterations** (optimizer steps): an official recipe given in epochs
converts as ``iterations = epochs * iters_per_epoch`` with ``iters_per_epoch = floor(ceil(D / W) /
b)`` for a training set of ``D`` datapoints on ``W`` processes with ``b`` images each (the official
``DistributedSampler`` pads to a multiple of ``W``, its ``BatchSampler`` drops the last incomplete
batch). The configs in ``configs/`` spell the conversion out next to each number.
"""
from detectron2.config import CfgNode as CN


def add_mdetr_solver_config(cfg: CN) -> None:
    """Add the training keys to ``cfg`` (in place); defaults follow the official command line
    (reference §8.1).

    Only ``SOLVER`` keys: calling it before or after :func:`mdetr_d2.config.add_mdetr_config`, or
    twice, gives the same config. The model-side switch MODEL.MDETR.GRADIENT_CHECKPOINTING is in
    ``add_mdetr_config``.
    """
    s = cfg.SOLVER
    # "ADAMW" (official default; "adam" also maps to AdamW there) or "SGD" (momentum
    # SOLVER.MOMENTUM).
    s.OPTIMIZER = "ADAMW"
    # LR of every parameter outside `backbone.` and `text_encoder.body.` (transformer, heads, text
    # resizer). MODEL.MDETR.LR_BACKBONE / LR_TEXT_ENCODER hold the other two groups' LRs.
    s.BASE_LR = 1e-4
    # Applied to every parameter (norms, biases and embeddings included), as officially;
    # SOLVER.WEIGHT_DECAY_NORM / WEIGHT_DECAY_BIAS are not used by this trainer.
    s.WEIGHT_DECAY = 1e-4
    # LR schedule, one of MDETR's `--schedule` values:
    #   "linear_with_warmup": backbone and transformer x0.1 every LR_DROP iterations; text
    #       encoder linear warm-up over WARMUP_FRACTION * MAX_ITER iterations, then linear decay
    #       to 0 at MAX_ITER,
    #   "step": every group x0.1 every LR_DROP iterations,
    #   "multistep": every group x0.5 at LR_DROP, LR_DROP + LR_DROP_PERIOD, ... (< MAX_ITER),
    #   "all_linear_with_warmup": the text-encoder rule for every group.
    # The official timing is kept: iteration 0 runs at the base LRs and iteration k > 0 at the value
    # of the rule for step k - 1. Detectron2's "WarmupMultiStepLR" / "WarmupCosineLR" are still
    # accepted.
    s.LR_SCHEDULER_NAME = "linear_with_warmup"
    # Iteration of the first LR drop (official `--lr_drop` epochs x iterations per epoch). 0 or a
    # value >= MAX_ITER: no drop.
    s.LR_DROP = 0
    # "multistep" only: distance between its drops (official: 50 epochs x iterations per epoch).
    s.LR_DROP_PERIOD = 0
    # Fraction of MAX_ITER used by the linear warm-up (official `fraction_warmup_steps`, rounded).
    s.WARMUP_FRACTION = 0.01
    # Clip the global L2 norm of all gradients to this value (official `--clip_max_norm`); 0
    # disables. Detectron2's per-parameter SOLVER.CLIP_GRADIENTS is not used by this trainer.
    s.CLIP_MAX_NORM = 0.1

    # Exponential moving average of the whole state dict (parameters and buffers), updated after
    # every optimizer step, saved in every checkpoint as `model_ema` and used for evaluation
    # (official `--ema`).
    s.EMA = CN()
    s.EMA.ENABLED = False
    s.EMA.DECAY = 0.9998

    # Mixed precision (SOLVER.AMP.ENABLED is Detectron2's switch): "bf16" (no loss scaling; runs on
    # CPU too) or "fp16" (with a GradScaler).
    s.AMP.PRECISION = "bf16"
