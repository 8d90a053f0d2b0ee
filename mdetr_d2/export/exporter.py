"""Export an MDETR model to TorchScript or ONNX: three traced graphs, the tokenizer and a manifest.

Both formats come from one tracing of each graph (:mod:`.graphs`) through Detectron2's
``TracingAdapter``: TorchScript with ``torch.jit.trace``, ONNX with the TorchScript-based
``torch.onnx`` exporter (``dynamo=False``) on the same trace, with dynamic batch, image size and
text length. Why not the ``torch.export``-based exporter (``dynamo=True``): with dynamic image
sizes, timm's TF "SAME" padding of the EfficientNet backbones (padding computed from each
layer's input size) makes its symbolic shapes grow layer by layer, and the export does not finish
(README "Export"); on ResNet models it works but takes ten times longer. A trace can hide
size-dependent Python branches, so every export is checked against the eager model on a padded
batch of other image sizes and text lengths than the traced ones (:func:`check_export`).

The export folder holds ``manifest.json`` (graph files with their SHA-256, input and output names,
and what post-processing needs), the graph files, ``tokenizer/`` and ``config.yaml`` (when the
config is given): :class:`~mdetr_d2.export.runtime.ExportedMDETR` runs it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from detectron2.export import TracingAdapter, dump_torchscript_IR
from detectron2.utils.file_io import PathManager
from torch.onnx import register_custom_op_symbolic, symbolic_helper, unregister_custom_op_symbolic
# The TorchScript-based exporter's symbolics: the built-in one a custom symbolic falls back to.
from torch.onnx._internal.torchscript_exporter.registration import registry as _onnx_symbolics

from ..checkpoint import CheckpointError, MDETRCheckpointer, load_checkpoint_file
from ..modeling.meta_arch import MDETR, normalize_and_pad
from ..structures.tokenizer import caption_token_limit
from .graphs import (
    IMAGE_INPUTS,
    TEXT_FEATURES,
    TEXT_INPUTS,
    GroundingGraph,
    ImageEncoderGraph,
    TextEncoderGraph,
    image_feature_names,
)
from .manifest import (
    FORMATS,
    GRAPH_SUFFIX,
    GRAPHS,
    MANIFEST_VERSION,
    TOKENIZER_DIR,
    ExportError,
    sha256_of,
    write_manifest,
)
from .runtime import ExportedMDETR

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
# The traced sample: a padded batch of two images (h, w) and two captions of different lengths.
TRACE_SIZES = ((160, 224), (128, 192))
TRACE_CAPTIONS = ("a man in a red shirt holds a small dog .", "the cat")
# The check after export: other image sizes and text lengths than the traced ones.
CHECK_SIZES = ((200, 136), (112, 248))
CHECK_CAPTIONS = ("the small red circle left of the blue square", "two dogs",
                  "a cat on the grass")
# Exported outputs within these of the eager model's (the targets): boxes 1e-5, the
# logit-like outputs 1e-4.
TOLERANCE = {"pred_boxes": 1e-5}
DEFAULT_TOLERANCE = 1e-4


def synthetic_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A smooth 3×H×W float image in 0..255 pixel units (gradients + noise), for tracing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)]) * 200
    return torch.from_numpy(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype("float32"))


@contextlib.contextmanager
def _tracing_messages() -> Iterator[None]:
    """Silence what every trace of this model says: tracer warnings on Python values computed
    from shapes (error checks and Hugging Face's mask helpers; :func:`check_export` verifies
    that the graphs follow new shapes), the deprecation notices of ``torch.jit.trace`` and the
    TorchScript-based ONNX exporter (see the module docstring for that choice), and the ONNX
    exporter's caution about negative gather indices."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
        # Our gathers (padding-mask cells, image_index) never index with negative values.
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced")
        yield


def _mean_axis_by_axis(base):
    """``aten::mean`` over several axes as one ``ReduceMean`` per axis; other means by ``base``.

    onnxruntime's CPU ``ReduceMean`` (and ``ReduceSum``) over several axes at once is less accurate
    than torch's mean: on the EfficientNet squeeze-excite pooling (a mean over H×W) of a padded
    batch it put every backbone level of the EfficientNet fixtures 1.7-3.2x further from float64
    than the eager model (CLEVR logits 1.2e-2 from eager; after: 0.9-1.1x, 5e-3, the eager model's
    own float32 error). The same mean one axis at a time is as accurate as torch's, at no
    measurable speed cost. (``GlobalAveragePool`` is worse, not better.)
    """
    def mean(g, x, *args):
        # aten::mean.dim(self, dim, keepdim, dtype); aten::mean(self, dtype) goes to ``base``.
        if len(args) == 3 and symbolic_helper._is_none(args[2]):
            dims = symbolic_helper._maybe_get_const(args[0], "is")
            keepdim = symbolic_helper._maybe_get_const(args[1], "i")
            if isinstance(dims, list) and len(dims) > 1 and isinstance(keepdim, int):
                for axis in dims:  # keepdims: negative axes keep their meaning
                    x = g.op("ReduceMean", x, axes_i=[axis], keepdims_i=1)
                if keepdim:
                    return x
                return g.op("Squeeze", x, g.op("Constant", value_t=torch.tensor(dims)))
        return base(g, x, *args)
    return mean


@contextlib.contextmanager
def _accurate_onnx_means() -> Iterator[None]:
    """Export ``aten::mean`` with :func:`_mean_axis_by_axis` inside this context only."""
    base = _onnx_symbolics.get_function_group("aten::mean").get(ONNX_OPSET)
    register_custom_op_symbolic("aten::mean", _mean_axis_by_axis(base), ONNX_OPSET)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::mean", ONNX_OPSET)


class _Sample:
    """A padded image batch and tokenized captions in the graphs' input format."""

    def __init__(self, model: MDETR, images: Sequence[torch.Tensor], captions: Sequence[str]):
        batch = normalize_and_pad(list(images), model.pixel_mean, model.pixel_std)
        self.images = batch.tensor
        self.image_sizes = torch.tensor(batch.image_sizes, dtype=torch.int64)
        self.pixel_mask = MDETR.padding_mask(batch)
        self.captions = list(captions)
        tokenized = model.text_encoder.tokenize(self.captions, model.device)
        self.input_ids = tokenized["input_ids"]
        self.attention_mask = tokenized["attention_mask"]
        self.image_index = torch.arange(len(captions)) % len(images)


def _graph_inputs(model: MDETR, sample: _Sample) -> dict[str, tuple]:
    """The traced inputs of each graph (each graph's output feeds the next)."""
    text = TextEncoderGraph(model)(sample.input_ids, sample.attention_mask)
    image = ImageEncoderGraph(model)(sample.images, sample.image_sizes)
    features = tuple(image[name] for name in image_feature_names(model))
    return {
        "text_encoder": (sample.input_ids, sample.attention_mask),
        "image_encoder": (sample.images, sample.image_sizes),
        "grounding": features + tuple(text[k] for k in TEXT_FEATURES) + (sample.image_index,),
    }


def _input_names(model: MDETR) -> dict[str, tuple[str, ...]]:
    return {
        "text_encoder": TEXT_INPUTS,
        "image_encoder": IMAGE_INPUTS,
        "grounding": image_feature_names(model) + TEXT_FEATURES + ("image_index",),
    }


def _dynamic_axes(names: Sequence[str]) -> dict[str, dict[int, str]]:
    """ONNX dynamic axes of every input and output: batch (images or texts), image sizes at each
    stride, text length."""
    texts = {0: "texts", 1: "tokens"}
    axes = {
        "input_ids": texts, "attention_mask": texts, "text_features": texts,
        "text_padding_mask": texts, "image_index": {0: "texts"},
        "images": {0: "images", 2: "height", 3: "width"}, "image_sizes": {0: "images"},
        "image_features": {0: "images", 2: "height_32", 3: "width_32"},
        "image_pos": {0: "images", 2: "height_32", 3: "width_32"},
        "image_mask": {0: "images", 1: "height_32", 2: "width_32"},
        "pred_masks": {0: "texts", 2: "height_4", 3: "width_4"},
    }
    for level, stride in (("res2", 4), ("res3", 8), ("res4", 16)):
        axes[f"image_{level}"] = {0: "images", 2: f"height_{stride}", 3: f"width_{stride}"}
    return {name: axes.get(name, {0: "texts"}) for name in names}


def input_specs(inputs: tuple, input_names: Sequence[str]) -> dict[str, dict]:
    """Dtype and shape of each graph input as the runtime checks them: a named axis (a dynamic
    one: batch, image size, text length) or the size the graph was traced with."""
    axes = _dynamic_axes(input_names)
    return {name: {"dtype": str(t.dtype).removeprefix("torch."),
                   "shape": [axes[name].get(i, size) for i, size in enumerate(t.shape)]}
            for name, t in zip(input_names, inputs)}


def check_exportable(model: torch.nn.Module) -> None:
    """Refuse what the graphs cannot represent, before any weights are loaded or traced.

    Raises:
        ExportError: not an MDETR model (another ``MODEL.META_ARCHITECTURE``), not in eval mode,
            or not on CPU.
    """
    if not isinstance(model, MDETR):
        raise ExportError(f"cannot export a {type(model).__name__}: the export supports the MDETR "
                          "meta-architecture (MODEL.META_ARCHITECTURE 'MDETR' or a subclass)")
    if model.training:
        raise ExportError("export a model in eval mode (model.eval()): the graphs are inference "
                          "graphs")
    if model.device.type != "cpu":
        raise ExportError(f"export a CPU model (MODEL.DEVICE cpu), not {model.device}: the traced "
                          "graphs keep the device they were traced on")


def _export_graph(graph: torch.nn.Module, inputs: tuple, input_names: Sequence[str], path: str,
                  fmt: str, dump_ir: bool) -> list[str]:
    """Trace ``graph`` on ``inputs`` and write it to ``path``; returns its output names."""
    # eval(): a new module is in training mode, which torch.onnx.export restores afterwards.
    adapter = TracingAdapter(graph, inputs).eval()
    with torch.no_grad():
        adapter(*adapter.flattened_inputs)  # records the output schema (sorted output names)
    output_names = list(adapter.outputs_schema.keys)
    with _tracing_messages(), torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            torch.jit.save(traced, path)
            if dump_ir:
                dump_torchscript_IR(traced, os.path.splitext(path)[0] + "_ir")
        else:
            with _accurate_onnx_means():
                torch.onnx.export(
                    adapter, adapter.flattened_inputs, path, input_names=list(input_names),
                    output_names=output_names,
                    dynamic_axes=_dynamic_axes(list(input_names) + output_names),
                    opset_version=ONNX_OPSET, dynamo=False,
                )
    return output_names


def load_export_weights(cfg, model: MDETR) -> None:
    """Load ``cfg.MODEL.WEIGHTS`` into ``model``, refusing a file that does not hold every weight
    of the model (an exported graph would carry the rest at their random initialization).

    Raises:
        CheckpointError: no weights file, a file for another architecture (shapes that disagree,
            no shared name: see :class:`MDETRCheckpointer`), or model weights missing from it.
    """
    if not cfg.MODEL.WEIGHTS:
        raise CheckpointError("MODEL.WEIGHTS is empty: an export needs trained weights "
                              "(give MODEL.WEIGHTS, or --official)")
    path = PathManager.get_local_path(cfg.MODEL.WEIGHTS)
    incompatible = MDETRCheckpointer.from_config(cfg, model).load_weights(
        load_checkpoint_file(path), cfg.MODEL.WEIGHTS)
    missing = incompatible.missing_keys
    if missing:
        raise CheckpointError(
            f"{cfg.MODEL.WEIGHTS}: {len(missing)} weight(s) of the model are not in the file "
            f"(first: {', '.join(sorted(missing)[:5])}): weights of another configuration? "
            "Export a config that matches the checkpoint"
        )


def model_facts(model: MDETR) -> dict:
    """What the runtime needs besides the graphs: pre- and post-processing settings."""
    s = model.class_prompts
    vocab = model.qa_vocab
    return {
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "input_format": model.input_format,
        "max_text_tokens": caption_token_limit(model.text_encoder.body.config),
        "text_encoder": model.text_encoder.name,
        "num_queries": model.query_embed.num_embeddings,
        "backbone": type(model.backbone).__name__,
        "backbone_fast_path": bool(getattr(model.backbone, "fast", False)),
        "mask_threshold": model.mask_threshold,
        "qa_head": model.qa_head_name if model.qa_head is not None else "none",
        "qa_vocab": None if vocab is None else {k: {str(i): a for i, a in v.items()}
                                                for k, v in vocab.items()},
        "default_caption": model.default_caption,
        "class_prompts": {"names": list(s.names), "dataset": s.dataset, "style": s.style,
                          "chunk_size": s.chunk_size, "max_prompt_tokens": s.max_prompt_tokens},
        "detections_per_image": model.detections_per_image,
    }


def export_mdetr(model: MDETR, output_dir: str, fmt: str = "torchscript", *,
                 sample_image: torch.Tensor | None = None, sample_caption: str | None = None,
                 cfg=None, dump_ir: bool = False, check: bool = True) -> dict:
    """Export ``model`` (in eval mode, on CPU) into ``output_dir`` and return the manifest.

    Args:
        fmt: "torchscript" or "onnx".
        sample_image: a C×H×W image in the model's pixel units and channel order to trace on
            (with a cropped copy of it, as a padded batch); default: synthetic images.
        sample_caption: a caption to trace on (with a short one); default: a fixed caption.
        cfg: the model's config, saved as ``config.yaml`` (and its ``MODEL.WEIGHTS`` recorded).
        dump_ir: also write the TorchScript code and IR of each graph (Detectron2's
            ``dump_torchscript_IR``) into ``<graph>_ir/``.
        check: run :func:`check_export` and record its differences in the manifest.
    """
    if fmt not in FORMATS:
        raise ExportError(f"export format must be one of {FORMATS}, got {fmt!r}")
    check_exportable(model)
    if sample_image is None:
        images = [synthetic_image(h, w, seed) for seed, (h, w) in enumerate(TRACE_SIZES)]
    else:
        h, w = sample_image.shape[-2:]
        images = [sample_image, sample_image[:, : max(1, h * 3 // 4), : max(1, w * 5 // 6)]]
    captions = [sample_caption or TRACE_CAPTIONS[0], TRACE_CAPTIONS[1]]
    os.makedirs(output_dir, exist_ok=True)
    inputs = _graph_inputs(model, _Sample(model, images, captions))
    input_names = _input_names(model)
    modules = {"text_encoder": TextEncoderGraph(model), "image_encoder": ImageEncoderGraph(model),
               "grounding": GroundingGraph(model)}
    graphs = {}
    for name in GRAPHS:
        path = os.path.join(output_dir, name + GRAPH_SUFFIX[fmt])
        outputs = _export_graph(modules[name], inputs[name], input_names[name], path, fmt, dump_ir)
        graphs[name] = {"file": os.path.basename(path), "sha256": sha256_of(path),
                        "inputs": list(input_names[name]), "outputs": outputs,
                        "input_specs": input_specs(inputs[name], input_names[name])}
        logger.info("exported the %s graph to %s", name, path)
    model.text_encoder.tokenizer.save_pretrained(os.path.join(output_dir, TOKENIZER_DIR))
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "format": fmt,
        "producer": {"torch": torch.__version__,
                     "onnx_opset": ONNX_OPSET if fmt == "onnx" else None},
        "graphs": graphs,
        "tokenizer": TOKENIZER_DIR,
        "model": model_facts(model),
        "weights": cfg.MODEL.WEIGHTS if cfg is not None else "",
        "traced": {"image_sizes": [list(im.shape[-2:]) for im in images], "captions": captions},
    }
    if cfg is not None:
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    write_manifest(output_dir, manifest)
    if check:
        manifest["check"] = check_export(model, output_dir)
        write_manifest(output_dir, manifest)
    return manifest


def raw_outputs(model: MDETR, images: torch.Tensor, pixel_mask: torch.Tensor,
                captions: list[str]) -> dict[str, torch.Tensor]:
    """The eager model's raw outputs that the grounding graph returns, for a padded batch."""
    with torch.no_grad():
        out = model.forward_network(images, pixel_mask, captions)
    return {k: v for k, v in out.items() if torch.is_tensor(v)}


def check_export(model: MDETR, export_dir: str, sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
                 captions: Sequence[str] = CHECK_CAPTIONS[:2]) -> dict[str, float]:
    """Max |exported − eager| of every raw output on a padded batch of images of ``sizes`` with
    ``captions`` (by default other sizes and text lengths than the traced ones).

    Logs a warning for each output beyond the tolerance (``TOLERANCE``, else
    ``DEFAULT_TOLERANCE``).

    Raises:
        RuntimeError: an output of another shape, or not finite: the graph did not follow the
            new shapes.
    """
    exported = ExportedMDETR(export_dir)
    sample = _Sample(model, [synthetic_image(h, w, 10 + i) for i, (h, w) in enumerate(sizes)],
                     captions)
    ours = exported.network(sample.images, sample.image_sizes, sample.captions)
    ref = raw_outputs(model, sample.images, sample.pixel_mask, sample.captions)
    diffs = {}
    for name, value in ours.items():
        if value.shape != ref[name].shape or not torch.isfinite(value).all():
            raise RuntimeError(f"{export_dir}: exported output {name} has shape "
                               f"{tuple(value.shape)} (eager: {tuple(ref[name].shape)}) or is not "
                               "finite on new image sizes: the traced graph does not generalize")
        diffs[name] = float((value.float() - ref[name].float()).abs().max())
        tolerance = TOLERANCE.get(name, DEFAULT_TOLERANCE)
        if diffs[name] > tolerance:
            logger.warning("%s: exported %s differs from the eager model by %.3g (> %g)",
                           export_dir, name, diffs[name], tolerance)
    logger.info("exported vs eager on new sizes %s: %s", list(sizes),
                ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    return diffs
