"""Every configuration key of mdetr_d2, for Detectron2's yacs ``CfgNode``: :func:`add_mdetr_config`.

Every key carries a comment; defaults are the official MDETR defaults (reference §8.1) unless
stated. The bottom layer of the package: it imports only Detectron2's ``CfgNode``.

Schedule lengths are optimizer steps (iterations) in Detectron2's keys (``SOLVER.MAX_ITER``,
``LR_DROP``, ``LR_DROP_PERIOD``, ``CHECKPOINT_PERIOD``, ``TEST.EVAL_PERIOD``). An official recipe
states epochs instead: it sets the epoch keys and leaves the iteration keys at ``-1``; the trainer
resolves them when training starts from the registered training sets' length and the global batch
(:mod:`mdetr_d2.engine.epochs`, ``iters_per_epoch = floor(ceil(D / W) / b)``) and logs the result.
An iteration key set to a value ``>= 0`` is used as given.
"""
from detectron2.config import CfgNode as CN

# Keys renamed since they were introduced: a config that still sets one fails with an error naming
# its new key (yacs' renamed-key check, in merge_from_file and merge_from_list).
RENAMED_KEYS = {
    "MODEL.MDETR.LR_BACKBONE": "SOLVER.BACKBONE_LR",
    "MODEL.MDETR.LR_TEXT_ENCODER": "SOLVER.TEXT_ENCODER_LR",
}


def add_mdetr_config(cfg: CN) -> None:
    """Add every MDETR key to ``cfg`` (in place). Call right after ``get_cfg()``."""
    _add_model_config(cfg)
    _add_input_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)
    for old, new in RENAMED_KEYS.items():
        if not cfg.key_is_renamed(old):  # the function may run twice on one config
            cfg.register_renamed_key(old, new)


def _add_model_config(cfg: CN) -> None:
    """``MODEL.*``: the meta-architecture, backbone, transformer, text encoder, heads and losses."""
    cfg.MODEL.META_ARCHITECTURE = "MDETR"  # mdetr_d2.modeling.meta_arch.MDETR
    # MDETR's backbones: torchvision-layout ResNet with FrozenBN (eps 1e-5) or the tf-EfficientNet
    # family.
    cfg.MODEL.BACKBONE.NAME = "build_mdetr_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2  # stem + res2 frozen, as the official `layer2/3/4` rule
    cfg.MODEL.RESNETS.DEPTH = 101  # 18 / 34 / 50 / 101 (the released ResNet models: 101)
    # Only build_mdetr_scratch_resnet_backbone: the level where the network stops and that feeds the
    # transformer ("res5" stride 32, "res4" stride 16, "res3" stride 8).
    cfg.MODEL.RESNETS.SCRATCH_LAST_LEVEL = "res5"
    # ImageNet statistics in 0-255 RGB pixel units (official ToTensor + Normalize): mean and std.
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"  # the channel order of those statistics and of the official loader

    cfg.MODEL.MDETR = CN()
    m = cfg.MODEL.MDETR
    # EfficientNet variant when MODEL.BACKBONE.NAME == "build_mdetr_efficientnet_backbone": b0..b7
    # (the released models use b3 and b5, noisy-student weights).
    m.EFFICIENTNET_VARIANT = "b3"
    # Load ImageNet weights for the backbone when building (torchvision / timm; downloads once).
    # Off by default: fine-tuning and evaluation start from MODEL.WEIGHTS instead.
    m.BACKBONE_PRETRAINED = False
    # ResNet deployment path: every frozen BatchNorm folded into its convolution, channels-last
    # memory. Faster (README "Performance"), but float rounding differs from the official code
    # (README "Parity"). Off: the official arithmetic (official weights give the official outputs).
    m.BACKBONE_FAST_PATH = False
    # Transformer (cross-encoder + decoder), post-norm.
    m.HIDDEN_DIM = 256  # width of the transformer, the queries and the projected text features
    m.NHEADS = 8  # attention heads
    m.ENC_LAYERS = 6  # cross-encoder layers (image and text tokens together)
    m.DEC_LAYERS = 6  # decoder layers
    m.DIM_FEEDFORWARD = 2048  # hidden size of each layer's feed-forward block
    m.DROPOUT = 0.1  # in attention and feed-forward blocks
    m.NUM_QUERIES = 100  # 25 for CLEVR
    # Auxiliary decoding losses on every decoder layer (and aux outputs at inference time).
    m.AUX_LOSS = True
    # Recompute encoder/decoder layer activations in the backward pass (less memory, more compute).
    m.GRADIENT_CHECKPOINTING = False

    m.TEXT_ENCODER = CN()
    # HF model name (roberta-base, distilroberta-base, roberta-large) or a local folder with a fast
    # tokenizer and the model weights. Nothing is downloaded when a local folder is given.
    m.TEXT_ENCODER.NAME = "roberta-base"
    # Keep the text encoder's weights fixed during training.
    m.TEXT_ENCODER.FREEZE = False
    # Load the HF pretrained weights when building; turn off when MODEL.WEIGHTS overrides them
    # anyway (the config and tokenizer are still read from NAME).
    m.TEXT_ENCODER.PRETRAINED = True

    # Contrastive alignment between decoder queries and cross-encoded text tokens (paper §2.2).
    m.CONTRASTIVE_ALIGN_LOSS = True
    m.CONTRASTIVE_HDIM = 64
    m.TEMPERATURE = 0.07
    # Global image-text InfoNCE on a CLS token (off in every released model).
    m.CONTRASTIVE_LOSS = False

    # Question answering heads: "none", "gqa" (split heads), "gqa_single" (one 1853-way head),
    # "clevr" (split heads).
    m.QA_HEAD = "none"
    # json with the GQA vocabularies (gqa_answer2id_by_type.json / gqa_answer2id.json) to return
    # answers as strings; empty = answer ids only.
    m.QA_VOCAB = ""
    # Train with the QA losses only (official `--no_detection`, CLEVR-Humans: the questions have no
    # boxes): no matching, no box / soft-token / alignment losses; evaluation reports QA accuracy
    # only. Needs QA_HEAD.
    m.NO_DETECTION = False
    # CLEVR-Ref+ "is final" head.
    m.PREDICT_FINAL = False
    # Segmentation (attention map + FPN-like mask head on the backbone levels).
    m.MASKS = False
    # Freeze everything but the mask head (PhraseCut step 2, official --frozen_weights).
    m.FREEZE_DETECTOR = False
    # Mask binarisation threshold at inference.
    m.MASK_THRESHOLD = 0.5

    # Loss weights and matcher costs (reference §3).
    m.CE_LOSS_COEF = 1.0  # soft-token prediction
    m.BBOX_LOSS_COEF = 5.0  # L1 box
    m.GIOU_LOSS_COEF = 2.0  # generalized IoU box
    m.CONTRASTIVE_ALIGN_LOSS_COEF = 1.0  # query-token contrastive alignment
    m.CONTRASTIVE_LOSS_COEF = 0.1  # global image-text InfoNCE (CONTRASTIVE_LOSS)
    m.MASK_LOSS_COEF = 1.0  # mask focal loss
    m.DICE_LOSS_COEF = 1.0  # mask dice loss
    m.ISFINAL_LOSS_COEF = 1.0  # CLEVR-Ref+ "is final"
    m.QA_LOSS_COEF = 1.0  # question answering heads
    m.EOS_COEF = 0.1  # weight of the unmatched queries' soft-token loss ("no object")
    m.SET_COST_CLASS = 1.0  # matcher: soft-token cost
    m.SET_COST_BBOX = 5.0  # matcher: L1 box cost
    m.SET_COST_GIOU = 2.0  # matcher: generalized IoU cost
    # Reproduce the official contrastive-align span lookup, which resolves whitespace fallbacks on
    # sample 0 of the batch (reference §3.5). On only for parity with official numbers.
    m.OFFICIAL_CONTRASTIVE_FALLBACK = False

    # Weights a weights-only load (MODEL.WEIGHTS) takes from an official file or one of our training
    # checkpoints: "model_ema" (the paper's numbers; falls back to "model" when absent) or "model".
    m.WEIGHTS_KEY = "model_ema"
    # Loading weights whose shape disagrees with the model is an error listing them, except for
    # the parameter names matching one of these regular expressions (re.match), which keep their
    # initialization: fine-tuning into a different head, e.g. ['qa_head\.'] for new QA answers.
    m.SKIP_MISMATCHED_WEIGHTS = []

    # Caption for inputs that carry neither "caption" nor "classes" (e.g. Detectron2's
    # DefaultPredictor, which passes only the image). Empty: such inputs are detected against the
    # class list below. Setting both this and CLASS_PROMPTS.NAMES is an error.
    m.DEFAULT_CAPTION = ""
    # Class prompts: MDETR as a detector over a class list (modulated detection, reference §4.5).
    m.CLASS_PROMPTS = CN()
    # Class names in contiguous-id order (pred_classes indexes this list). Empty: the thing_classes
    # of the dataset being evaluated (the trainer's test loader passes them with every image),
    # else of DATASETS.TEST[0] (e.g. for DefaultPredictor).
    m.CLASS_PROMPTS.NAMES = []
    # "per_class": every name (cleaned of parentheses and underscores) is its own caption; each
    # gives all queries as detections of that class, scored 1 - p(no-object) (the official LVIS
    # protocol, exact). "joined": names joined by " . " into as few prompts as the token slots
    # allow, one span per class; each query is one detection of the class whose span holds the
    # most token probability, scored by that probability mass (far fewer captions to run).
    m.CLASS_PROMPTS.STYLE = "per_class"
    # Captions (per_class) or prompts (joined) encoded and decoded together. per_class: 32 is the
    # official chunk; the text of a chunk is padded to its longest caption.
    m.CLASS_PROMPTS.CHUNK_SIZE = 32
    # joined: most tokens in one prompt, <s> and </s> included; at most 255 (the predictable slots).
    m.CLASS_PROMPTS.MAX_PROMPT_TOKENS = 255


def _add_input_config(cfg: CN) -> None:
    """``INPUT.MDETR.*`` and the loader defaults; they reproduce the official recipes (§6)."""
    # MDETR keeps records without boxes (LVIS negative captions, GQA test questions): they supervise
    # "no object". Detectron2's default would silently drop them.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    # Training records that cannot be read or encoded (corrupt image, caption the text encoder
    # cannot take, ...) are skipped, logged by name and counted; training stops once more than
    # ceil(fraction x training records) distinct records failed. 0.1 %: dropping that little data
    # does not change training, at least one bad record is always tolerated, and a systematic
    # problem (wrong image root, wrong text encoder) still stops the run early. 0 = stop at the
    # first bad record. Evaluation never skips: a bad evaluation record is an error.
    cfg.DATALOADER.MAX_BAD_RECORD_FRACTION = 0.001
    # gt_masks type when MODEL.MDETR.MASKS is on: "bitmask" (BitMasks, rasterized at the original
    # size then transformed like the image, as the official loader does) or "polygon"
    # (PolygonMasks).
    cfg.INPUT.MASK_FORMAT = "bitmask"

    cfg.INPUT.MDETR = CN()
    c = cfg.INPUT.MDETR
    # Augmentation chain: "cautious" (all natural-image datasets, §6.1) or "clevr" (§6.2). The
    # keys below left empty / 0 / -1 take the value of this preset.
    c.KIND = "cautious"
    # Shorter sides of the final training resize, chosen uniformly (cautious: 480..800 step 32;
    # clevr: 256..384 step 32). Empty = preset.
    c.SCALES = []
    # Cap on the longer side of the final training resize (cautious 1333, clevr 512). 0 = preset,
    # -1 = no cap.
    c.MAX_SIZE = 0
    # Shorter sides of the resize before the random crop (cautious 400/500/600, clevr 320/352/384;
    # never capped). Empty = preset.
    c.PRE_CROP_SCALES = []
    # [min, max] side of the box-respecting random crop (cautious [384, 1333], clevr [256, 512]).
    c.CROP_SIZE = []
    # Crop windows drawn until no box is lost; the last one is kept regardless (official: 100).
    c.CROP_MAX_TRIES = 100
    # Probability of the resize-only branch (else resize -> crop -> resize); official 0.5.
    c.RESIZE_ONLY_PROB = 0.5
    # Evaluation resize: shorter side (cautious 800; clevr 0 = native size). -1 = preset.
    c.TEST_SIZE = -1
    # Evaluation cap on the longer side (cautious 1333). 0 = preset, -1 = no cap.
    c.TEST_MAX_SIZE = 0
    # Horizontal flip that swaps "left"/"right" in the caption and re-derives the spans (§6.3). Off
    # in every released recipe; turning it on departs from the official training.
    c.TEXT_AWARE_FLIP = False
    # Probability of that flip when TEXT_AWARE_FLIP is on.
    c.FLIP_PROB = 0.5
    # Width of the positive map (token slots incl. the last "no object" slot; MDETR: 256).
    c.MAX_TOKEN_SLOTS = 256


def _add_solver_config(cfg: CN) -> None:
    """``SOLVER.*``: optimizer, LRs and schedules, clipping, EMA, mixed precision, epochs; defaults
    follow the official command line (reference §8.1). The model-side switch
    MODEL.MDETR.GRADIENT_CHECKPOINTING is with the model keys."""
    s = cfg.SOLVER
    # "ADAMW" (official default; "adam" also maps to AdamW there) or "SGD" (momentum
    # SOLVER.MOMENTUM).
    s.OPTIMIZER = "ADAMW"
    # LR of every parameter outside `backbone.` and `text_encoder.body.` (transformer, heads, text
    # resizer); the other two parameter groups have their own LRs, the next two keys.
    s.BASE_LR = 1e-4
    # LR of the image backbone (every parameter under a `backbone` module; official
    # `--lr_backbone`).
    s.BACKBONE_LR = 1e-5
    # LR of the text encoder's language model (`text_encoder.body.`; official `--text_encoder_lr`).
    s.TEXT_ENCODER_LR = 5e-5
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
    s.EMA.ENABLED = False  # on in the released recipes (configs/Base-MDETR.yaml)
    s.EMA.DECAY = 0.9998  # weight of the average at each update

    # Mixed precision (SOLVER.AMP.ENABLED is Detectron2's switch): "bf16" (no loss scaling; runs on
    # CPU too) or "fp16" (with a GradScaler).
    s.AMP.PRECISION = "bf16"


def _add_test_config(cfg: CN) -> None:
    """``TEST.*``: evaluation period in epochs and the evaluators' options."""
    # Evaluate every this many epochs (-> TEST.EVAL_PERIOD; official `--eval_skip`, default 1); 0 =
    # only at the end of training.
    cfg.TEST.EVAL_PERIOD_EPOCHS = 1

    cfg.TEST.MDETR_EVAL = CN()
    # Also report class-agnostic COCO box (and mask) AP on detection-style splits (§7.1).
    cfg.TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP = True
    # PhraseCut keeps queries scoring above this and unions their masks (§4.4).
    cfg.TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH = 0.7
    # LVIS fixed AP: detections kept per category over the whole dataset (§7.7).
    cfg.TEST.MDETR_EVAL.LVIS_TOPK = 10000
