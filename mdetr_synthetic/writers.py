"""Writing the synthetic world to disk, in MDETR's annotation format, with a cache manifest.

Each split has ``num_<split>`` scenes (one PNG each). Three families of datapoints are written per
split, in the official MDETR annotation format (reference §5.1: one json "image" entry = one
image-caption pair):

* ``synthetic_refexp_<split>.json`` (as RefCOCO, §5.3): one referring expression per entry, one
  box, whose ``tokens_positive`` is the root noun phrase; the entry's ``expression_type`` says what
  singles the object out.
* ``synthetic_flickr_<split>.json`` (as Flickr30k Entities, §5.4): a multi-phrase caption with one
  annotation per object and ``tokens_positive_eval`` per phrase. The same captions are also written
  in the Flickr30k Entities layout (``flickr_entities/<split>/``) for the Flickr evaluator.
* ``synthetic_qa_<split>.json`` (as GQA QA, §5.6): a question with its ``answer``, ``questionId``
  and ``question_type`` (a GQA semantic type), plus ``question_family`` (exist / count / color /
  shape / size) and ``answer_type`` (binary / attribute / number, the CLEVR answer families,
  §1.15); the objects the question mentions are annotated.

A fourth file, ``synthetic_detection_<split>.json``, is a plain COCO detection view of the same
scenes: one image entry per scene, every object annotated, its category the shape (registered with
Detectron2's ``register_coco_instances`` and scored with its ``COCOEvaluator``, class-prompt
detection over the shape names).

Object masks are written as COCO polygons (the exact polygons that were drawn). Everything is
deterministic from the seed: the same call writes byte-identical PNGs and json files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from .language import (
    Datapoint,
    lexicon,
    make_phrase_caption,
    make_questions,
    make_refexps,
    qa_vocabularies,
)
from .rendering import render_scene
from .scenes import SHAPES, SIZE_RANGES, SPLITS, Scene, sample_scene, scene_rng
from .text_encoder import build_text_encoder_folder

logger = logging.getLogger(__name__)

# Bump whenever the output for a given set of parameters changes (invalidates existing manifests).
GENERATOR_VERSION = 4
MANIFEST_NAME = "manifest.json"
FAMILIES = ("refexp", "flickr", "qa")
DETECTION = "detection"  # the COCO detection view (not an MDETR caption family)


def json_paths(root: Path) -> dict[str, Path]:
    """``{"synthetic_<family>_<split>": annotation json}`` of a world written under ``root``."""
    return {f"synthetic_{family}_{split}": root / "annotations" / f"synthetic_{family}_{split}.json"
            for family in FAMILIES + (DETECTION,) for split in SPLITS}


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]


def flickr_entities_files(scene: Scene, file_name: str, datapoints: list[Datapoint]
                          ) -> tuple[str, str]:
    """The scene's captions in the Flickr30k Entities layout (``Sentences/<id>.txt``,
    ``Annotations/<id>.xml``), so the Flickr evaluator reads them as it reads Flickr30k.

    An entity is a set of objects (one per phrase; phrases of different sentences naming the same
    set share it); its type is the shape, so recalls are also reported per shape.
    """
    entities: dict[tuple[int, ...], str] = {}
    lines = []
    for dp in datapoints:
        members: dict[tuple[int, int], list[int]] = {}
        for obj_index, spans in dp.boxes:
            members.setdefault(tuple(spans[0]), []).append(obj_index)
        caption, marked, last = dp.caption, [], 0
        for (span,) in dp.extra["tokens_positive_eval"]:
            objs = tuple(sorted(members[tuple(span)]))
            entity = entities.setdefault(objs, str(len(entities) + 1))
            beg, end = span
            shape = scene.objects[objs[0]].shape
            marked.append(f"{caption[last:beg]}[/EN#{entity}/{shape} {caption[beg:end]}]")
            last = end
        lines.append("".join(marked) + caption[last:])
    objects = []
    for i, obj in enumerate(scene.objects):
        names = "".join(f"<name>{e}</name>" for objs, e in entities.items() if i in objs)
        if names:
            x, y, w, h = obj.bbox
            box = "".join(f"<{t}>{round(v)}</{t}>" for t, v in
                          zip(("xmin", "ymin", "xmax", "ymax"), (x, y, x + w, y + h)))
            objects.append(f"<object>{names}<bndbox>{box}</bndbox></object>")
    size = f"<width>{scene.width}</width><height>{scene.height}</height><depth>3</depth>"
    xml = (f"<annotation><filename>{file_name}</filename><size>{size}</size>{''.join(objects)}"
           "</annotation>\n")
    return "\n".join(lines) + "\n", xml


def _generate_split(root: Path, split: str, num_images: int, seed: int, params: dict
                    ) -> tuple[dict[str, dict], list[str]]:
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    entities_dir = root / "flickr_entities" / split
    for sub in ("Sentences", "Annotations"):
        (entities_dir / sub).mkdir(parents=True, exist_ok=True)
    files = {family: {"info": {"description": f"synthetic grounding world, {family} {split}",
                               "seed": seed, "generator_version": GENERATOR_VERSION},
                      "licenses": [], "categories": _categories(), "images": [], "annotations": []}
             for family in FAMILIES + (DETECTION,)}
    captions = []
    for index in tqdm(range(num_images), desc=f"synthetic {split}", unit="img",
                      disable=not params["progress"]):
        rng = scene_rng(seed, split, index)
        scene = sample_scene(rng, params["min_side"], params["max_side"])
        file_name = f"{index:06d}.png"
        render_scene(scene).save(image_dir / file_name, format="PNG")
        per_family = {
            "refexp": make_refexps(rng, scene, params["refexp_per_image"]),
            "flickr": [make_phrase_caption(rng, scene) for _ in range(params["flickr_per_image"])],
            "qa": make_questions(rng, scene, params["qa_per_image"]),
        }
        detection = files[DETECTION]
        detection["images"].append({"file_name": file_name, "height": scene.height,
                                    "width": scene.width, "id": index})
        for obj in scene.objects:
            # Ids from 1: pycocotools' matching takes annotation id 0 for "unmatched".
            ann = {"area": round(obj.area, 2), "iscrowd": 0, "image_id": index,
                   "category_id": SHAPES.index(obj.shape) + 1,
                   "id": len(detection["annotations"]) + 1, "bbox": [round(v, 2) for v in obj.bbox]}
            if params["masks"]:
                ann["segmentation"] = [[v for p in obj.polygon for v in p]]
            detection["annotations"].append(ann)
        sentences, xml = flickr_entities_files(scene, file_name, per_family["flickr"])
        (entities_dir / "Sentences" / f"{index}.txt").write_text(sentences)
        (entities_dir / "Annotations" / f"{index}.xml").write_text(xml)
        for family, datapoints in per_family.items():
            data = files[family]
            for sentence_id, dp in enumerate(datapoints):
                image_id = len(data["images"])
                entry = {"file_name": file_name, "height": scene.height, "width": scene.width,
                         "id": image_id, "original_id": index, "caption": dp.caption,
                         "dataset_name": f"synthetic_{family}"}
                if family == "flickr":
                    entry.update(original_img_id=index, sentence_id=sentence_id)
                if family == "qa":
                    entry["questionId"] = f"{split}_{index:06d}_{sentence_id}"
                entry.update(dp.extra)
                data["images"].append(entry)
                captions.append(dp.caption)
                for obj_index, spans in dp.boxes:
                    obj = scene.objects[obj_index]
                    ann = {"area": round(obj.area, 2), "iscrowd": 0, "image_id": image_id,
                           "category_id": SHAPES.index(obj.shape) + 1,
                           # From 1: pycocotools reads annotation id 0 as "unmatched".
                           "id": len(data["annotations"]) + 1,
                           "bbox": [round(v, 2) for v in obj.bbox], "tokens_positive": spans}
                    if params["masks"]:
                        ann["segmentation"] = [[v for p in obj.polygon for v in p]]
                    data["annotations"].append(ann)
    (entities_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in range(num_images)))
    return files, captions


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    os.replace(tmp, path)


def generate_synthetic_dataset(
    root: str | os.PathLike,
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 200,
    num_test: int = 200,
    *,
    refexp_per_image: int = 2,
    flickr_per_image: int = 1,
    qa_per_image: int = 2,
    min_side: int = 96,
    max_side: int = 128,
    masks: bool = True,
    text_encoder: bool = True,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    force: bool = False,
    progress: bool = True,
) -> dict[str, str]:
    """Write the synthetic grounding dataset (and its text encoder) under ``root``.

    Layout: ``images/{split}/NNNNNN.png``,
    ``annotations/synthetic_{refexp,flickr,qa,detection}_{split}.json``,
    ``flickr_entities/{split}/``
    (Flickr30k Entities layout of the flickr captions), ``text_encoder/`` (fast RoBERTa tokenizer
    trained on the train captions + a random-init RoBERTa),
    ``synthetic_qa_answer2id{,_by_type}.json`` (GQA-format answer vocabularies) and
    ``manifest.json``. When ``manifest.json`` records the same
    parameters and every output exists, nothing is written (pass ``force`` to regenerate).

    Args:
        root: output folder (created).
        seed: everything is a function of it (and of the other parameters).
        num_train, num_val, num_test: scenes (PNG images) per split.
        refexp_per_image, flickr_per_image, qa_per_image: datapoints per scene and family (at most;
            a scene can have fewer referable objects or distinct questions).
        min_side, max_side: range of the image width and height in pixels.
        masks: write per-object polygons (``segmentation``).
        text_encoder: also build ``text_encoder/``.
        text_hidden_size, text_layers: size of the random-init RoBERTa.
        force: regenerate even if the manifest matches.
        progress: show tqdm progress bars.

    Returns:
        ``{"synthetic_<family>_<split>": json path, ..., "image_root_<split>": folder,
        "flickr_entities_<split>": folder, "qa_answer2id": path, "qa_answer2id_by_type": path,
        "text_encoder": folder (if built), "manifest": path}``.
    """
    root = Path(root)
    params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_train": num_train,
              "num_val": num_val, "num_test": num_test, "refexp_per_image": refexp_per_image,
              "flickr_per_image": flickr_per_image, "qa_per_image": qa_per_image,
              "min_side": min_side, "max_side": max_side, "masks": masks,
              "text_encoder": text_encoder,
              "text_hidden_size": text_hidden_size, "text_layers": text_layers}
    if min_side < 2 * SIZE_RANGES["large"][1]:
        raise ValueError(f"min_side must be at least {2 * SIZE_RANGES['large'][1]} pixels")
    outputs = {name: str(p) for name, p in json_paths(root).items()}
    outputs.update({f"image_root_{s}": str(root / "images" / s) for s in SPLITS})
    outputs.update({f"flickr_entities_{s}": str(root / "flickr_entities" / s) for s in SPLITS})
    outputs["qa_answer2id"] = str(root / "synthetic_qa_answer2id.json")
    outputs["qa_answer2id_by_type"] = str(root / "synthetic_qa_answer2id_by_type.json")
    if text_encoder:
        outputs["text_encoder"] = str(root / "text_encoder")
    manifest_path = root / MANIFEST_NAME
    outputs["manifest"] = str(manifest_path)

    if not force and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        expected = [p for k, p in outputs.items() if k != "manifest"]
        if manifest.get("params") == params and all(Path(p).exists() for p in expected):
            logger.info("synthetic dataset at %s is up to date (seed %d)", root, seed)
            return outputs
    if manifest_path.is_file():
        # Stale output of ours: drop it so no image of a larger earlier run lingers.
        manifest_path.unlink()
        for split in SPLITS:
            shutil.rmtree(root / "images" / split, ignore_errors=True)
            shutil.rmtree(root / "flickr_entities" / split, ignore_errors=True)
        shutil.rmtree(root / "text_encoder", ignore_errors=True)

    (root / "annotations").mkdir(parents=True, exist_ok=True)
    num_images = {"train": num_train, "val": num_val, "test": num_test}
    counts = {}
    train_captions: list[str] = []
    run_params = dict(params, progress=progress)
    for split in SPLITS:
        files, captions = _generate_split(root, split, num_images[split], seed, run_params)
        if split == "train":
            train_captions = captions
        for family, data in files.items():
            _write_json(Path(outputs[f"synthetic_{family}_{split}"]), data)
            counts[f"synthetic_{family}_{split}"] = {"datapoints": len(data["images"]),
                                                     "boxes": len(data["annotations"])}
        counts[f"images_{split}"] = num_images[split]
    answer2id, answer2id_by_type = qa_vocabularies()
    _write_json(Path(outputs["qa_answer2id"]), answer2id)
    _write_json(Path(outputs["qa_answer2id_by_type"]), answer2id_by_type)

    if text_encoder:
        build_text_encoder_folder(root / "text_encoder", lexicon() + train_captions, seed=seed,
                                  hidden_size=text_hidden_size, num_layers=text_layers)

    written = [str(Path(p).relative_to(root)) for k, p in outputs.items() if k != "manifest"]
    digest = hashlib.sha256()
    for name in sorted(written):
        path = root / name
        for file in sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    _write_json(manifest_path, {"params": params, "files": sorted(written), "counts": counts,
                                "sha256_of_files": digest.hexdigest()})
    logger.info("wrote synthetic dataset to %s: %s", root, counts)
    return outputs


