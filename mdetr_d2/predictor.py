"""A Detectron2-style predictor: ``predictor(image, caption)`` on one image, batches and many
captions; ``predictor(image, classes=names)`` detects a class list."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import MDETRCheckpointer
from .data.transforms import build_augmentation_from_config


def check_image(image, where: str = "image") -> np.ndarray:
    """Validate one predictor image and return it (unchanged).

    Accepted: a numpy ``H×W×3`` array, ``H, W > 0``, either ``uint8`` or floating point with finite
    values in 0..255 (pixel units, as ``cv2.imread`` gives them; a float image in 0..1 is refused).

    Raises:
        ValueError: saying what was expected and what was given.
    """
    expected = "a numpy uint8 (or float, 0..255) H×W×3 array"
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{where}: expected {expected}, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: expected {expected}, got shape {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        size = f"{image.shape[1]}×{image.shape[0]}"
        raise ValueError(f"{where}: expected a non-empty image, got size {size}")
    if image.dtype == np.uint8:
        return image
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"{where}: expected {expected}, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError(f"{where}: has NaN or infinite pixel values")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise ValueError(f"{where}: float pixel values must lie in 0..255, got {low:g}..{high:g}")
    if 0 < high <= 1:
        raise ValueError(
            f"{where}: float pixel values in 0..{high:g} look like a 0..1 image; expected 0..255 "
            "pixel values (multiply by 255, or pass uint8)"
        )
    return image


def check_caption(caption, where: str = "caption") -> str:
    """Validate one caption: a non-empty ``str``. Raises ``ValueError`` otherwise."""
    if not isinstance(caption, str):
        hint = " (decode it to str)" if isinstance(caption, bytes) else ""
        raise ValueError(f"{where}: expected a str, got {type(caption).__name__}{hint}")
    if not caption.strip():
        raise ValueError(f"{where}: is empty: MDETR needs text to ground ({caption!r})")
    return caption


def _check_list(values, what: str) -> list:
    if isinstance(values, (str, bytes, np.ndarray)) or not isinstance(values, (list, tuple)):
        raise ValueError(f"expected a list of {what}, got {type(values).__name__}")
    if not values:
        raise ValueError(f"expected a non-empty list of {what}, got an empty one")
    return list(values)


class MDETRPredictor:
    """Builds the model from ``cfg``, loads ``cfg.MODEL.WEIGHTS`` (official or Detectron2 checkpoints;
    ``MODEL.MDETR.WEIGHTS_KEY`` picks EMA or raw weights) and runs MDETR's evaluation transform.

    Like Detectron2's ``DefaultPredictor``, images are ``H×W×3`` uint8 arrays in BGR order (as
    ``cv2.imread`` gives them) unless ``image_format`` says otherwise; float arrays are accepted
    with values in 0..255 (not 0..1; Detectron2 resizes them with torch's bilinear interpolation
    instead of PIL's, so boxes differ slightly from the uint8 image's). They are converted to
    ``cfg.INPUT.FORMAT``. Captions are
    non-empty ``str``. Any other input raises ``ValueError`` saying what was expected. Outputs are
    in original image pixels.
    """

    def __init__(self, cfg, image_format: str = "BGR"):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if cfg.MODEL.WEIGHTS:
            checkpointer = MDETRCheckpointer.from_config(cfg, self.model)
            checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
        self.augmentations = T.AugmentationList(build_augmentation_from_config(cfg, is_train=False))
        self.image_format = image_format
        self.input_format = cfg.INPUT.FORMAT
        if {image_format, self.input_format} - {"RGB", "BGR"}:
            raise ValueError(f"only RGB/BGR images are supported, got {image_format}/{self.input_format}")

    def _image_input(self, image: np.ndarray, where: str = "image") -> dict:
        """The model input of one image (``image``, ``height``, ``width``), without text."""
        check_image(image, where)
        if self.image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "height": height, "width": width}

    def _to_input(self, image: np.ndarray, caption: str, index: int | None = None) -> dict:
        suffix = "" if index is None else f" {index}"
        x = self._image_input(image, "image" + suffix)
        x["caption"] = check_caption(caption, "caption" + suffix)
        return x

    @torch.no_grad()
    def __call__(self, image: np.ndarray, caption: str | None = None, *,
                 classes: Sequence[str] | None = None) -> dict:
        """One image and its caption -> ``{"instances": Instances[, "qa": {...}]}``.

        With ``classes`` (a list of names) instead, or with neither (then the config decides:
        ``MODEL.MDETR.DEFAULT_CAPTION`` or ``MODEL.MDETR.CLASS_PROMPTS``): class-prompt detection,
        ``pred_classes`` indexing the class list, plus ``all_instances`` (every detection, see
        ``MDETR.detect_classes``).
        """
        x = self._image_input(image)
        if caption is not None:
            x["caption"] = check_caption(caption)
        if classes is not None:
            x["classes"] = [check_caption(c, f"class name {i}")
                            for i, c in enumerate(_check_list(classes, "class names"))]
        return self.model([x])[0]

    @torch.no_grad()
    def predict_batch(self, images: list[np.ndarray], captions: list[str]) -> list[dict]:
        """Pairs ``(images[i], captions[i])`` in one padded batch."""
        images, captions = _check_list(images, "images"), _check_list(captions, "captions")
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        return self.model(
            [self._to_input(im, c, i) for i, (im, c) in enumerate(zip(images, captions))]
        )

    @torch.no_grad()
    def predict_captions(self, image: np.ndarray, captions: list[str]) -> list[dict]:
        """Many captions on one image (e.g. one phrase per class): the backbone runs once, the
        cross-encoder and decoder run on all captions as one batch."""
        model = self.model
        captions = _check_list(captions, "captions")
        inputs = [self._to_input(image, c, i) for i, c in enumerate(captions)]
        images = model.preprocess_image(inputs[:1])
        features = model.encode_image(images.tensor, model.padding_mask(images)).expand(len(captions))
        outputs = model.decode(model.encode(features, None, captions))
        images.image_sizes = images.image_sizes * len(captions)
        return model.inference(outputs, images, inputs)
