"""Run an exported MDETR: the graphs of :func:`export_mdetr`, the Hugging Face tokenizer and the
model's own pre- and post-processing functions; no model code runs the network.

``ExportedMDETR(folder)(batched_inputs)`` takes the inputs of the eager model in eval mode
(``[{"image": C×H×W tensor, "caption" | "classes", "height", "width"}]``) and returns the same
results: ``Instances`` for captions (with ``qa`` answers for QA models) and class prompts.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from detectron2.structures import ImageList

from ..modeling.class_prompts import (
    ClassPrompts,
    ClassPromptSettings,
    build_class_prompts,
    route_inputs,
)
from ..modeling.meta_arch import normalize_and_pad
from ..modeling.postprocessing import class_prompt_results, grounded_results
from ..modeling.text_encoder import EncodedText
from ..structures.tokenizer import build_tokenizer, tokenize_captions
from .manifest import GRAPHS, read_manifest
from .graphs import TEXT_FEATURES

logger = logging.getLogger(__name__)

# Encoded class lists kept (e.g. one per evaluation dataset), as the eager model does.
_PROMPT_CACHE_SIZE = 4


def check_graph_inputs(path: str, specs: dict[str, dict], tensors: dict) -> None:
    """Check ``tensors`` against the graph's input specs (dtype; shape: the traced size of fixed
    axes, one size per named dynamic axis across the inputs), so that a wrong input is named
    here rather than deep inside TorchScript or onnxruntime.

    Raises:
        ValueError: a missing input, not a tensor, another dtype or rank, a fixed axis of
            another size, or a dynamic axis with different sizes in two inputs.
    """
    seen: dict[str, tuple[str, int]] = {}
    for name, spec in specs.items():
        t = tensors.get(name)
        expected = "(" + ", ".join(str(d) for d in spec["shape"]) + ")"
        if not torch.is_tensor(t):
            raise ValueError(f"{path}: input {name!r} must be a {spec['dtype']} tensor of shape "
                             f"{expected}, got {type(t).__name__}")
        if t.dtype != getattr(torch, spec["dtype"]):
            raise ValueError(f"{path}: input {name!r} must be {spec['dtype']}, got "
                             f"{str(t.dtype).removeprefix('torch.')}")
        fixed = all(isinstance(d, str) or d == n for d, n in zip(spec["shape"], t.shape))
        if t.dim() != len(spec["shape"]) or not fixed:
            raise ValueError(f"{path}: input {name!r} must have shape {expected}, got "
                             f"{tuple(t.shape)}")
        for axis, size in zip(spec["shape"], t.shape):
            if isinstance(axis, str):
                other, other_size = seen.setdefault(axis, (name, size))
                if other_size != size:
                    raise ValueError(f"{path}: inputs {other!r} and {name!r} disagree on axis "
                                     f"{axis!r}: {other_size} vs {size}")


class _TorchScriptGraph:
    """A traced graph: tensors in, tensors out."""

    def __init__(self, path: str, spec: dict):
        self.path = path
        self.module = torch.jit.load(path, map_location="cpu")
        self.inputs, self.outputs = spec["inputs"], spec["outputs"]
        self.input_specs = spec["input_specs"]

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        check_graph_inputs(self.path, self.input_specs, tensors)
        with torch.no_grad():
            values = self.module(*(tensors[name] for name in self.inputs))
        return dict(zip(self.outputs, values))


class _OnnxGraph:
    """An ONNX graph in an onnxruntime CPU session: tensors in, tensors out."""

    def __init__(self, path: str, spec: dict, num_threads: int | None):
        try:
            import onnxruntime as ort  # local: an optional dependency (the "export" extra)
        except ImportError as e:
            raise ImportError(f"{path}: running ONNX graphs needs onnxruntime "
                              "(pip install 'mdetr_d2[export]')") from e
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.path = path
        self.inputs, self.outputs = spec["inputs"], spec["outputs"]
        self.input_specs = spec["input_specs"]

    def __call__(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        check_graph_inputs(self.path, self.input_specs, tensors)
        feeds = {name: tensors[name].cpu().numpy() for name in self.inputs}
        values = self.session.run(self.outputs, feeds)
        return {name: torch.from_numpy(v) for name, v in zip(self.outputs, values)}


class ExportedMDETR:
    """An exported MDETR model, called like the eager model in eval mode.

    Attributes:
        manifest: the export's ``manifest.json``.
        tokenizer: the text encoder's fast tokenizer (from the export folder).
    """

    def __init__(self, folder: str, *, num_threads: int | None = None):
        """
        Args:
            folder: an export folder of :func:`export_mdetr` (``tools/export_model.py``).
            num_threads: onnxruntime's intra-op threads (default: onnxruntime's choice);
                TorchScript graphs use torch's setting.
        """
        self.folder = folder
        self.manifest = read_manifest(folder)
        facts = self.manifest["model"]
        self.tokenizer = build_tokenizer(os.path.join(folder, self.manifest["tokenizer"]))
        self.graphs = {}
        for name in GRAPHS:
            spec = self.manifest["graphs"][name]
            path = os.path.join(folder, spec["file"])
            self.graphs[name] = (_OnnxGraph(path, spec, num_threads)
                                 if self.manifest["format"] == "onnx"
                                 else _TorchScriptGraph(path, spec))
        self.pixel_mean = torch.tensor(facts["pixel_mean"]).view(-1, 1, 1)
        self.pixel_std = torch.tensor(facts["pixel_std"]).view(-1, 1, 1)
        self.max_text_tokens = facts["max_text_tokens"]
        self.mask_threshold = facts["mask_threshold"]
        self.qa_head_name = facts["qa_head"]
        vocab = facts["qa_vocab"]
        self.qa_vocab = None if vocab is None else {
            k: {int(i): a for i, a in v.items()} for k, v in vocab.items()}
        self.default_caption = facts["default_caption"]
        prompts = dict(facts["class_prompts"])
        prompts["names"] = tuple(prompts["names"])
        self.class_prompts = ClassPromptSettings(**prompts)
        self.detections_per_image = facts["detections_per_image"]
        self._prompt_cache: OrderedDict = OrderedDict()

    # ----------------------------------------------------------------------------------------------
    # The graphs
    def encode_text(self, captions: list[str]) -> EncodedText:
        """Tokenize (as the eager text encoder, with the exported length limit) and run the text
        encoder graph."""
        name = os.path.join(self.folder, self.manifest["graphs"]["text_encoder"]["file"])
        tokenized = tokenize_captions(self.tokenizer, captions, self.max_text_tokens, name)
        out = self.graphs["text_encoder"](input_ids=tokenized["input_ids"],
                                          attention_mask=tokenized["attention_mask"])
        return EncodedText(tokenized, *(out[k] for k in TEXT_FEATURES))

    def encode_images(self, images: torch.Tensor, image_sizes: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """The image encoder graph on a normalised padded batch and its valid sizes (B×2)."""
        return self.graphs["image_encoder"](images=images, image_sizes=image_sizes)

    def ground(self, image: dict[str, torch.Tensor], text: EncodedText,
               image_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The grounding graph: raw outputs of text ``t`` on image ``image_index[t]``."""
        return self.graphs["grounding"](**image, text_features=text.features,
                                        text_padding_mask=text.padding_mask,
                                        image_index=image_index)

    def network(self, images: torch.Tensor, image_sizes: torch.Tensor,
                captions: list[str] | EncodedText) -> dict[str, torch.Tensor]:
        """Raw outputs of a padded batch, caption ``i`` on image ``i`` (as
        :meth:`MDETR.forward_network`, without ``tokenized``)."""
        text = captions if isinstance(captions, EncodedText) else self.encode_text(captions)
        index = torch.arange(text.features.shape[0])
        return self.ground(self.encode_images(images, image_sizes), text, index)

    # ----------------------------------------------------------------------------------------------
    # The eager model's inference entry point
    def __call__(self, batched_inputs: list[dict]) -> list[dict]:
        """Results of ``batched_inputs`` as the eager model gives them in eval mode."""
        return route_inputs(batched_inputs, self.default_caption, self.class_prompts, self._ground,
                            self.detect_classes)

    def preprocess(self, batched_inputs: list[dict]) -> ImageList:
        return normalize_and_pad([x["image"] for x in batched_inputs], self.pixel_mean,
                                 self.pixel_std)

    def _ground(self, batched_inputs: list[dict], captions: list[str]) -> list[dict]:
        images = self.preprocess(batched_inputs)
        text = self.encode_text(captions)
        outputs = self.network(images.tensor, torch.tensor(images.image_sizes), text)
        outputs["tokenized"] = text.tokenized
        return grounded_results(outputs, images.image_sizes, tuple(images.tensor.shape[-2:]),
                                batched_inputs, captions, self.mask_threshold, self.qa_head_name,
                                self.qa_vocab)

    def encoded_class_prompts(self, names: Sequence[str]) -> tuple[ClassPrompts, list[EncodedText]]:
        """The prompts of ``names`` and each chunk's encoded text (cached per class list)."""
        key = tuple(names)
        if key not in self._prompt_cache:
            prompts = build_class_prompts(self.class_prompts, names, self.tokenizer,
                                          self.max_text_tokens)
            self._prompt_cache[key] = (prompts, [self.encode_text(c.captions)
                                                 for c in prompts.chunks])
            while len(self._prompt_cache) > _PROMPT_CACHE_SIZE:
                self._prompt_cache.popitem(last=False)
        self._prompt_cache.move_to_end(key)
        return self._prompt_cache[key]

    def detect_classes(self, x: dict, names: Sequence[str]) -> dict:
        """Class-prompt detection of one input, as :meth:`MDETR.detect_classes`: the image is
        encoded once, the grounding graph runs once per prompt chunk."""
        prompts, texts = self.encoded_class_prompts(names)
        images = self.preprocess([x])
        image = self.encode_images(images.tensor, torch.tensor(images.image_sizes))
        outputs = []
        for text in texts:
            index = torch.zeros(text.features.shape[0], dtype=torch.int64)
            out = self.ground(image, text, index)
            outputs.append((out["pred_logits"], out["pred_boxes"]))
        size = (x.get("height", images.image_sizes[0][0]), x.get("width", images.image_sizes[0][1]))
        return class_prompt_results(prompts, outputs, size, self.detections_per_image)
