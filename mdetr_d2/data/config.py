"""Data configuration keys (``INPUT.MDETR.*`` and loader defaults); called from ``add_mdetr_config``."""

from detectron2.config import CfgNode as CN


def add_mdetr_data_config(cfg: CN) -> None:
    """Add the MDETR data keys to ``cfg`` in place. Defaults reproduce the official recipes (§6)."""
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
    # gt_masks type when MODEL.MDETR.MASKS is on: "bitmask" (BitMasks, rasterized at the original size
    # then transformed like the image, as the official loader does) or "polygon" (PolygonMasks).
    cfg.INPUT.MASK_FORMAT = "bitmask"

    cfg.INPUT.MDETR = CN()
    c = cfg.INPUT.MDETR
    # Augmentation chain: "cautious" (all natural-image datasets, §6.1) or "clevr" (§6.2). The keys
    # below left empty / 0 / -1 take the value of this preset.
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
    # Horizontal flip that swaps "left"/"right" in the caption and re-derives the spans (§6.3). Off in
    # every released recipe; turning it on departs from the official training.
    c.TEXT_AWARE_FLIP = False
    # Probability of that flip when TEXT_AWARE_FLIP is on.
    c.FLIP_PROB = 0.5
    # Width of the positive map (token slots incl. the last "no object" slot; MDETR: 256).
    c.MAX_TOKEN_SLOTS = 256
