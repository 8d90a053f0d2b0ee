"""A Detectron2-style predictor: ``predictor(image, caption)`` on one image, batches and many captions."""
from __future__ import annotations

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from .checkpoint import MDETRCheckpointer
from .data.transforms import build_augmentation_from_config


class MDETRPredictor:
    """Builds the model from ``cfg``, loads ``cfg.MODEL.WEIGHTS`` (official or Detectron2 checkpoints;
    ``MODEL.MDETR.WEIGHTS_KEY`` picks EMA or raw weights) and runs MDETR's evaluation transform.

    Like Detectron2's ``DefaultPredictor``, images are ``H×W×C`` uint8 arrays in BGR order (as
    ``cv2.imread`` gives them) unless ``image_format`` says otherwise; they are converted to
    ``cfg.INPUT.FORMAT``. Outputs are in original image pixels.
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

    def _to_input(self, image: np.ndarray, caption: str) -> dict:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
        if self.image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        return {"image": tensor, "caption": caption, "height": height, "width": width}

    @torch.no_grad()
    def __call__(self, image: np.ndarray, caption: str) -> dict:
        """One image and its caption -> ``{"instances": Instances[, "qa": {...}]}``."""
        return self.model([self._to_input(image, caption)])[0]

    @torch.no_grad()
    def predict_batch(self, images: list[np.ndarray], captions: list[str]) -> list[dict]:
        """Pairs ``(images[i], captions[i])`` in one padded batch."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        return self.model([self._to_input(im, c) for im, c in zip(images, captions)])

    @torch.no_grad()
    def predict_captions(self, image: np.ndarray, captions: list[str]) -> list[dict]:
        """Many captions on one image (e.g. one phrase per class): the backbone runs once, the
        cross-encoder and decoder run on all captions as one batch."""
        model = self.model
        inputs = [self._to_input(image, c) for c in captions]
        images = model.preprocess_image(inputs[:1])
        features = model.encode_image(images.tensor, model.padding_mask(images)).expand(len(captions))
        outputs = model.decode(model.encode(features, None, captions))
        images.image_sizes = images.image_sizes * len(captions)
        return model.inference(outputs, images, inputs)
