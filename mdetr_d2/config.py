"""MDETR configuration keys for Detectron2's yacs ``CfgNode``.

Every key carries a comment; defaults are the official MDETR defaults (reference §8.1) unless stated.
"""
from detectron2.config import CfgNode as CN


def add_mdetr_config(cfg: CN) -> None:
    """Add every MDETR key to ``cfg`` (in place). Call right after ``get_cfg()``."""
    cfg.MODEL.META_ARCHITECTURE = "MDETR"
    # MDETR's backbones: torchvision-layout ResNet with FrozenBN (eps 1e-5) or the tf-EfficientNet family.
    cfg.MODEL.BACKBONE.NAME = "build_mdetr_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2  # stem + res2 frozen, as the official `layer2/3/4` rule
    cfg.MODEL.RESNETS.DEPTH = 101
    # Only build_mdetr_scratch_resnet_backbone: the level where the network stops and that feeds the
    # transformer ("res5" stride 32, "res4" stride 16, "res3" stride 8).
    cfg.MODEL.RESNETS.SCRATCH_LAST_LEVEL = "res5"
    # ImageNet statistics in 0-255 RGB pixel units (official ToTensor + Normalize).
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"

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
    m.HIDDEN_DIM = 256
    m.NHEADS = 8
    m.ENC_LAYERS = 6
    m.DEC_LAYERS = 6
    m.DIM_FEEDFORWARD = 2048
    m.DROPOUT = 0.1
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
    # Load the HF pretrained weights when building; turn off when MODEL.WEIGHTS overrides them anyway
    # (the config and tokenizer are still read from NAME).
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
    # json with the GQA vocabularies (gqa_answer2id_by_type.json / gqa_answer2id.json) to return answers
    # as strings; empty = answer ids only.
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
    m.CE_LOSS_COEF = 1.0
    m.BBOX_LOSS_COEF = 5.0
    m.GIOU_LOSS_COEF = 2.0
    m.CONTRASTIVE_ALIGN_LOSS_COEF = 1.0
    m.CONTRASTIVE_LOSS_COEF = 0.1
    m.MASK_LOSS_COEF = 1.0
    m.DICE_LOSS_COEF = 1.0
    m.ISFINAL_LOSS_COEF = 1.0
    m.QA_LOSS_COEF = 1.0
    m.EOS_COEF = 0.1
    m.SET_COST_CLASS = 1.0
    m.SET_COST_BBOX = 5.0
    m.SET_COST_GIOU = 2.0
    # Reproduce the official contrastive-align span lookup, which resolves whitespace fallbacks on
    # sample 0 of the batch (reference §3.5). On only for parity with official numbers.
    m.OFFICIAL_CONTRASTIVE_FALLBACK = False

    # Learning rates of the two extra parameter groups (SOLVER.BASE_LR is the transformer's).
    m.LR_BACKBONE = 1e-5
    m.LR_TEXT_ENCODER = 5e-5

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

    cfg.TEST.MDETR_EVAL = CN()
    # Also report class-agnostic COCO box (and mask) AP on detection-style splits (§7.1).
    cfg.TEST.MDETR_EVAL.CLASS_AGNOSTIC_AP = True
    # PhraseCut keeps queries scoring above this and unions their masks (§4.4).
    cfg.TEST.MDETR_EVAL.PHRASECUT_SCORE_THRESH = 0.7
    # LVIS fixed AP: detections kept per category over the whole dataset (§7.7).
    cfg.TEST.MDETR_EVAL.LVIS_TOPK = 10000

    # Local imports: the data and engine packages import modules that use this function.
    from .data.config import add_mdetr_data_config
    from .engine.config import add_mdetr_solver_config

    add_mdetr_data_config(cfg)
    add_mdetr_solver_config(cfg)
