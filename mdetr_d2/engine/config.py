"""Training keys of mdetr_d2 (optimizer, LR schedules, clipping, EMA, mixed precision, epochs).

Schedule lengths are optimizer steps (iterations) in Detectron2's keys (``SOLVER.MAX_ITER``,
``LR_DROP``, ``LR_DROP_PERIOD``, ``CHECKPOINT_PERIOD``, ``TEST.EVAL_PERIOD``). An official recipe
states epochs instead: it sets the epoch keys below and leaves the iteration keys at ``-1``; the
trainer resolves them when training starts from the registered training sets' length and the global
batch (:mod:`mdetr_d2.engine.epochs`, ``iters_per_epoch = floor(ceil(D / W) / b)``) and logs the
result. An iteration key set to a value ``>= 0`` is used as given.
"""
from detectron2.config import CfgNode as CN


def add_mdetr_solver_config(cfg: CN) -> None:
    """Add the training keys to ``cfg`` (in place); defaults follow the official command line
    (reference §8.1).

    ``SOLVER`` keys and ``TEST.EVAL_PERIOD_EPOCHS``: calling it before or after
    :func:`mdetr_d2.config.add_mdetr_config`, or twice, gives the same config. The model-side switch
    MODEL.MDETR.GRADIENT_CHECKPOINTING is in ``add_mdetr_config``.
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
    # Iteration of the first LR drop (-1: SOLVER.LR_DROP_EPOCHS x iterations per epoch). 0 or a
    # value >= MAX_ITER: no drop.
    s.LR_DROP = 0
    # "multistep" only: distance between its drops (-1: SOLVER.LR_DROP_PERIOD_EPOCHS x iterations
    # per epoch).
    s.LR_DROP_PERIOD = 0
    # Fraction of MAX_ITER used by the linear warm-up (official `fraction_warmup_steps`, rounded).
    s.WARMUP_FRACTION = 0.01

    # Schedule in epochs (official `--epochs`, `--lr_drop`, `--epoch_chunks`): each iteration key
    # left at -1 (as configs/Base-MDETR.yaml does) is computed as <epoch key> x iterations per epoch
    # when training starts. Training length; 0 = not set (then SOLVER.MAX_ITER must be given).
    s.EPOCHS = 0
    # Epoch of the first LR drop (-> SOLVER.LR_DROP); 0 = no drop.
    s.LR_DROP_EPOCHS = 0
    # "multistep" only: epochs between its drops (-> SOLVER.LR_DROP_PERIOD; official: 50).
    s.LR_DROP_PERIOD_EPOCHS = 50
    # Checkpoint every this many epochs (-> SOLVER.CHECKPOINT_PERIOD; official: every epoch).
    s.CHECKPOINT_PERIOD_EPOCHS = 1
    # Official `--epoch_chunks`: K > 0 cuts the training set into K chunks of ceil(D / K)
    # datapoints and every "epoch" is one chunk (epochs, LR drop and periods count chunk-epochs;
    # GQA). Our sampler still draws from the whole set; only the arithmetic follows the chunks.
    s.EPOCH_CHUNKS = 0
    # Clip the global L2 norm of all gradients to this value (official `--clip_max_norm`); 0
    # disables. Detectron2's per-parameter SOLVER.CLIP_GRADIENTS is not used by this trainer.
    s.CLIP_MAX_NORM = 0.1

    # Exponential moving average of the whole state dict (parameters and buffers), updated after
    # every optimizer step, saved in every checkpoint as `model_ema` and used for evaluation
    # (official `--ema`).
    s.EMA = CN()
    s.EMA.ENABLED = False
    s.EMA.DECAY = 0.9998

    # Evaluate every this many epochs (-> TEST.EVAL_PERIOD; official `--eval_skip`, default 1); 0 =
    # only at the end of training.
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1

    # Mixed precision (SOLVER.AMP.ENABLED is Detectron2's switch): "bf16" (no loss scaling; runs on
    # CPU too) or "fp16" (with a GradScaler).
    s.AMP.PRECISION = "bf16"
