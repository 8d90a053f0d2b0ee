"""Miniatures of every MDETR recipe's data, in the real on-disk layouts, from the synthetic world.

:func:`write_recipe_datasets` fills a datasets root (what ``$MDETR_DATASETS`` points at) with a few
images per split of every family the recipes in ``configs/`` train and evaluate on, laid out and
named as ``datasets/README.md`` describes, so that the registrations of
``mdetr_d2.data.datasets`` and the evaluators read them as they read the real data:

* ``mdetr_annotations/``: the MDETR json of every family (Flickr separateGT / mergedGT, the
  pre-training mix with ``data_source``, the RefCOCO/+/g splits and their pre-training val, GQA
  detection val and QA splits with ``gqa_answer2id*.json``, PhraseCut, LVIS 1/10/100 %, VG);
* ``flickr30k/``: images and the Flickr30k Entities folder (``Annotations/*.xml``,
  ``Sentences/*.txt``, ``{train,val,test}.txt``);
* ``coco/{train2014,train2017,val2017}/``, ``gqa/images/``: the COCO and GQA/VG images;
* ``phrasecut/``: the original PhraseCut folder the evaluator reads (``image_data_split.json``,
  ``refer_<split>.json``, ``name_att_rel_count.json``);
* ``lvis/lvis_v1_minival.json`` (LVIS v1 fields: ``coco_url``, ``neg_category_ids``,
  ``not_exhaustive_category_ids``; categories with ``synonyms`` and ``frequency``);
* ``clevr/``: CLEVR v1.0 and CoGenT images (480x320) and question files, the MDETR CLEVR json of
  the medium / full / CoGenT variants, CLEVR-Humans; ``clevr_ref+/`` with ``isfinal`` flags;
* ``synthetic/``: the synthetic world itself (:func:`generate_synthetic_dataset`), whose local
  text encoder (``synthetic/text_encoder``) stands in for roberta-base.

Pixels and text come from the synthetic world (shapes, colours, sizes; referring expressions,
phrase captions, questions). Where the real data has a property the evaluators depend on, the
miniature keeps it: every Flickr phrase names the objects it covers, QA answers are in the
vocabularies, CLEVR answers are CLEVR answers. PhraseCut instances are integer rectangles, so the
MDETR json polygons (rasterized by pycocotools) and the PhraseCut polygons (rasterized by the
evaluator's PIL code) cover the same pixels: the ground truth fed back as a prediction scores 1.

Deterministic from ``seed``; nothing is downloaded. ``tests/test_recipe_matrix.py`` runs every
config of ``configs/`` on it.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from mdetr_d2.structures import CLEVR_ATTRIBUTES
from mdetr_d2.data.datasets import layout
from mdetr_d2.data.datasets.mdetr_json import CLEVR_IMAGE_HW
from mdetr_d2.data.datasets.register_refexp import REFEXP_SPLITS

from .language import (
    Datapoint,
    Description,
    absent_description,
    choose_expression,
    make_phrase_caption,
    make_questions,
    make_refexps,
    qa_vocabularies,
    referring_options,
)
from .rendering import render_scene
from .scenes import SHAPES, Scene, SceneObject, sample_scene
from .writers import flickr_entities_files, generate_synthetic_dataset

__all__ = ["LVIS_FREQUENCIES", "write_recipe_datasets"]

# LVIS frequency group of each synthetic category (rare / common / frequent).
LVIS_FREQUENCIES = {"circle": "f", "square": "f", "triangle": "c", "star": "c", "diamond": "r"}


def _rng(seed: int, family: str, split: str, index: int) -> np.random.Generator:
    """One generator per (family, split, image): images do not depend on the other families."""
    return np.random.default_rng(
        [seed, zlib.crc32(family.encode()), zlib.crc32(split.encode()), index])


def _resized(scene: Scene, width: int, height: int) -> Scene:
    """The scene stretched to ``width x height`` (CLEVR images are 480x320)."""
    sx, sy = width / scene.width, height / scene.height
    objects = tuple(
        SceneObject(o.shape, o.color, o.size,
                    tuple((round(x * sx, 2), round(y * sy, 2)) for x, y in o.polygon), o.fill)
        for o in scene.objects
    )
    return Scene(width, height, scene.background, objects)


def _save(scene: Scene, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 95} if path.suffix == ".jpg" else {}
    render_scene(scene).save(path, **options)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")))


def _bbox(obj: SceneObject) -> list[float]:
    return [round(v, 2) for v in obj.bbox]


class _CocoJson:
    """An MDETR json under construction: one image entry per datapoint, ids in order."""

    def __init__(self, description: str):
        self.data = {"info": {"description": description}, "licenses": [], "images": [],
                     "annotations": [], "categories": [{"id": 1, "name": "object"}]}

    def __len__(self) -> int:
        return len(self.data["images"])

    def add(self, entry: dict, annotations: list[dict]) -> None:
        image_id = len(self.data["images"])
        self.data["images"].append(dict(entry, id=image_id))
        for ann in annotations:
            x, y, w, h = ann["bbox"]
            # Annotation ids from 1: pycocotools never matches a ground-truth box with id 0.
            self.data["annotations"].append(
                {"area": round(w * h, 2), "iscrowd": 0, "category_id": 1, **ann,
                 "image_id": image_id, "id": len(self.data["annotations"]) + 1})

    def write(self, path: Path) -> int:
        _write_json(path, self.data)
        return len(self)


def _entry(file_name: str, scene: Scene, caption: str, **extra) -> dict:
    return {"file_name": file_name, "height": scene.height, "width": scene.width,
            "caption": caption, "tokens_negative": [[0, len(caption)]], **extra}


def _grounding(dp: Datapoint, scene: Scene, key: str = "tokens_positive") -> list[dict]:
    return [{"bbox": _bbox(scene.objects[i]), key: spans} for i, spans in dp.boxes]


def _joined(datapoints: list[Datapoint]) -> tuple[str, list[tuple[int, list[list[int]]]]]:
    """Captions joined into one, spans shifted (the pre-training combiner, reference §5.5)."""
    caption, boxes = "", []
    for dp in datapoints:
        text = dp.caption if dp.caption.endswith((".", "?")) else dp.caption + " ."
        offset = len(caption) + (1 if caption else 0)
        caption = f"{caption} {text}" if caption else text
        boxes += [(i, [[b + offset, e + offset] for b, e in spans]) for i, spans in dp.boxes]
    return caption, boxes


class _RecipeWriter:
    def __init__(self, root: Path, seed: int, n: int):
        self.root, self.seed, self.n = root, seed, n
        self.counts: dict[str, int] = {}
        self._next_id: dict[str, int] = {}

    def new_id(self, kind: str, start: int) -> int:
        self._next_id[kind] = self._next_id.get(kind, start) + 1
        return self._next_id[kind]

    def ann(self, name: str) -> Path:
        return Path(layout.ann(str(self.root), name))

    def done(self, path: Path, count: int) -> None:
        self.counts[path.relative_to(self.root).as_posix()] = count

    def write(self, coco: _CocoJson, path: Path) -> None:
        self.done(path, coco.write(path))

    # ------------------------------------------------------------------ Flickr30k Entities
    def flickr(self) -> None:
        images = self.root / layout.FLICKR_IMAGES
        entities = self.root / layout.FLICKR_ENTITIES
        for sub in ("Annotations", "Sentences"):
            (entities / sub).mkdir(parents=True, exist_ok=True)
        for split in ("train", "val", "test"):
            separate = _CocoJson(f"flickr separateGT {split}")
            merged = _CocoJson(f"flickr mergedGT {split}")
            image_ids = []
            for i in range(self.n):
                rng = _rng(self.seed, "flickr", split, i)
                scene = sample_scene(rng)
                image_id = self.new_id("flickr", 1_000_000_000)
                file_name = f"{image_id}.jpg"
                _save(scene, images / ("train" if split == "train" else "val") / file_name)
                datapoints = [make_phrase_caption(rng, scene) for _ in range(2)]
                sentences, xml = flickr_entities_files(scene, file_name, datapoints)
                (entities / "Sentences" / f"{image_id}.txt").write_text(sentences)
                (entities / "Annotations" / f"{image_id}.xml").write_text(xml)
                image_ids.append(image_id)
                for sentence_id, dp in enumerate(datapoints):
                    # Sizes are strings in the released Flickr files (they come from the XML).
                    entry = _entry(file_name, scene, dp.caption, dataset_name="flickr",
                                   sentence_id=sentence_id, original_img_id=image_id,
                                   tokens_positive_eval=dp.extra["tokens_positive_eval"])
                    entry.update(height=str(scene.height), width=str(scene.width))
                    separate.add(entry, _grounding(dp, scene))
                    # mergedGT: one box per phrase, enclosing every object the phrase names.
                    boxes = []
                    for (span,) in dp.extra["tokens_positive_eval"]:
                        objs = [scene.objects[j].bbox for j, spans in dp.boxes if spans[0] == span]
                        x0, y0 = min(b[0] for b in objs), min(b[1] for b in objs)
                        x1 = max(b[0] + b[2] for b in objs)
                        y1 = max(b[1] + b[3] for b in objs)
                        boxes.append({"bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                                      "tokens_positive": [span]})
                    merged.add(entry, boxes)
            (entities / f"{split}.txt").write_text("".join(f"{i}\n" for i in image_ids))
            self.write(separate, self.ann(f"final_flickr_separateGT_{split}.json"))
            self.write(merged, self.ann(f"final_flickr_mergedGT_{split}.json"))

    # ------------------------------------------------------------------ RefCOCO/+/g (COCO 2014)
    def coco2014_image(self, family: str, split: str, i: int
                       ) -> tuple[np.random.Generator, Scene, int, str]:
        rng = _rng(self.seed, family, split, i)
        scene = sample_scene(rng)
        coco_id = self.new_id("coco2014", 100_000)
        file_name = f"COCO_train2014_{coco_id:012d}.jpg"
        _save(scene, self.root / layout.COCO / "train2014" / file_name)
        return rng, scene, coco_id, file_name

    def refexp(self) -> None:
        pretrain_val = _CocoJson("refexp pre-training val")
        for dataset, splits in REFEXP_SPLITS.items():
            for split in splits:
                data = _CocoJson(f"{dataset} {split}")
                for i in range(self.n):
                    rng, scene, coco_id, file_name = self.coco2014_image(dataset, split, i)
                    for dp in make_refexps(rng, scene, 2):
                        entry = _entry(file_name, scene, dp.caption, original_id=coco_id,
                                       dataset_name=dataset)
                        anns = _grounding(dp, scene)
                        data.add(entry, anns)
                        if split == "val":
                            pretrain_val.add(entry, anns)
                self.write(data, self.ann(f"finetune_{dataset}_{split}.json"))
        self.write(pretrain_val, self.ann("final_refexp_val.json"))

    # ------------------------------------------------------------------ GQA / VG images
    def gqa_image(self, family: str, split: str, i: int
                  ) -> tuple[np.random.Generator, Scene, int, str]:
        rng = _rng(self.seed, family, split, i)
        scene = sample_scene(rng)
        vg_id = self.new_id("vg", 2_300_000)
        file_name = f"{vg_id}.jpg"
        _save(scene, self.root / layout.GQA_IMAGES / file_name)
        return rng, scene, vg_id, file_name

    def gqa(self) -> None:
        detection_val = _CocoJson("GQA detection val")
        for split in ("train", "val", "testdev", "test", "challenge", "submission"):
            labelled = split in ("train", "val", "testdev")
            every, balanced = _CocoJson(f"gqa {split} all"), _CocoJson(f"gqa {split} balanced")
            for i in range(self.n):
                rng, scene, vg_id, file_name = self.gqa_image("gqa", split, i)
                for q, dp in enumerate(make_questions(rng, scene, 2)):
                    entry = _entry(file_name, scene, dp.caption, original_id=str(vg_id),
                                   dataset_name="gqa", question_type=dp.extra["question_type"],
                                   questionId=f"{vg_id}{q:02d}")
                    anns = _grounding(dp, scene) if labelled else []  # test-like splits: no boxes
                    if labelled:
                        entry["answer"] = dp.extra["answer"]
                    every.add(entry, anns)
                    if q == 0:  # "balanced" is a subset of "all"
                        balanced.add(entry, anns)
                    if split == "val":
                        detection_val.add(entry, anns)
            if split in ("train", "val"):
                self.write(every, self.ann(f"finetune_gqa_{split}_all.json"))
            self.write(balanced, self.ann(f"finetune_gqa_{split}_balanced.json"))
        self.write(detection_val, self.ann("final_gqa_val.json"))
        answer2id, answer2id_by_type = qa_vocabularies()
        for name, vocab in (("gqa_answer2id.json", answer2id),
                            ("gqa_answer2id_by_type.json", answer2id_by_type)):
            _write_json(self.ann(name), vocab)
            self.done(self.ann(name), len(vocab))

    # ------------------------------------------------------------------ pre-training mix and VG
    def pretrain(self) -> None:
        mixed = _CocoJson("mixed pre-training set")
        for i in range(self.n):
            rng, scene, coco_id, file_name = self.coco2014_image("mixed_coco", "train", i)
            caption, boxes = _joined(make_refexps(rng, scene, 2))
            mixed.add(_entry(file_name, scene, caption, original_id=coco_id, data_source="coco",
                             dataset_name="mixed"),
                      [{"bbox": _bbox(scene.objects[j]), "tokens_positive": s} for j, s in boxes])
            rng, scene, vg_id, file_name = self.gqa_image("mixed_vg", "train", i)
            caption, boxes = _joined([make_phrase_caption(rng, scene)]
                                     + make_questions(rng, scene, 1))
            mixed.add(_entry(file_name, scene, caption, original_id=vg_id, data_source="vg",
                             dataset_name="mixed"),
                      [{"bbox": _bbox(scene.objects[j]), "tokens_positive": s} for j, s in boxes])
        self.write(mixed, self.ann("final_mixed_train.json"))
        for split in ("train", "val"):
            regions = _CocoJson(f"VG regions {split}")
            for i in range(self.n):
                rng, scene, vg_id, file_name = self.gqa_image("vg", split, i)
                dp = make_phrase_caption(rng, scene)
                regions.add(_entry(file_name, scene, dp.caption, original_id=vg_id,
                                   dataset_name="VG"), _grounding(dp, scene))
            self.write(regions, self.ann(f"final_vg_{split}.json"))

    # ------------------------------------------------------------------ PhraseCut
    def phrasecut(self) -> None:
        folder = self.root / layout.PHRASECUT
        image_split, cat_count, att_count = [], {}, {}
        keysets = (("shape",), ("color", "shape"), ("size", "color", "shape"))
        for split in ("train", "val", "miniv", "test"):
            data, refer = _CocoJson(f"phrasecut {split}"), []
            for i in range(self.n):
                rng, scene, vg_id, file_name = self.gqa_image("phrasecut", split, i)
                image_split.append({"image_id": vg_id, "split": split, "width": scene.width,
                                    "height": scene.height, "coco_id": vg_id if i % 2 else None})
                described = set()
                for k in range(2):
                    obj = scene.objects[int(rng.integers(len(scene.objects)))]
                    desc = Description.of(obj, keysets[int(rng.integers(len(keysets)))])
                    if desc in described:
                        continue
                    described.add(desc)
                    phrase = desc.text()
                    members = [o for o in scene.objects if desc.matches(o)]
                    # Integer rectangles: json polygon [x0, x1) and PhraseCut polygon [x0, x1 - 1]
                    # rasterize to the same pixels (pycocotools vs the evaluator's PIL drawing).
                    rects = [(math.floor(o.bbox[0]), math.floor(o.bbox[1]),
                              math.ceil(o.bbox[0] + o.bbox[2]), math.ceil(o.bbox[1] + o.bbox[3]))
                             for o in members]
                    task_id = f"{vg_id}__{k}"
                    data.add(_entry(file_name, scene, phrase, original_id=vg_id,
                                    dataset_name="phrasecut", task_id=task_id),
                             [{"bbox": [x0, y0, x1 - x0, y1 - y0],
                               "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                               "tokens_positive": [[0, len(phrase)]]} for x0, y0, x1, y1 in rects])
                    attributes = [v for key, v in desc.attrs if key != "shape"]
                    refer.append({
                        "image_id": vg_id, "task_id": task_id, "phrase": phrase,
                        "phrase_structure": {"name": obj.shape, "attributes": attributes,
                                             "relation_descriptions": [],
                                             "type": "attribute" if attributes else "name"},
                        "instance_boxes": [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in rects],
                        "Polygons": [[[[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]]]
                                     for x0, y0, x1, y1 in rects],
                    })
                    cat_count[obj.shape] = cat_count.get(obj.shape, 0) + 1
                    for a in attributes:
                        att_count[a] = att_count.get(a, 0) + 1
            self.write(data, self.ann(f"finetune_phrasecut_{split}.json"))
            _write_json(folder / f"refer_{split}.json", refer)
            self.done(folder / f"refer_{split}.json", len(refer))
        _write_json(folder / "image_data_split.json", image_split)
        self.done(folder / "image_data_split.json", len(image_split))
        ranked = lambda counts: sorted(counts.items(), key=lambda kv: -kv[1])  # noqa: E731
        _write_json(folder / "name_att_rel_count.json",
                    {"cat": ranked(cat_count), "att": ranked(att_count), "rel": []})

    # ------------------------------------------------------------------ LVIS v1
    def lvis(self) -> None:
        categories = [{"id": i + 1, "name": s, "synonyms": [s], "synset": f"{s}.n.01",
                       "def": f"a {s} shape", "frequency": LVIS_FREQUENCIES[s],
                       "image_count": 0, "instance_count": 0} for i, s in enumerate(SHAPES)]
        by_name = {c["name"]: c for c in categories}

        def image(split: str, i: int) -> tuple[Scene, int, dict]:
            rng = _rng(self.seed, "lvis", split, i)
            scene = sample_scene(rng)
            coco_id = self.new_id("coco2017", 400_000)
            _save(scene, self.root / layout.COCO / split / f"{coco_id:012d}.jpg")
            present = sorted({o.shape for o in scene.objects})
            info = {"id": coco_id, "height": scene.height, "width": scene.width,
                    "coco_url": f"http://images.cocodataset.org/{split}/{coco_id:012d}.jpg",
                    "neg_category_ids": [by_name[s]["id"] for s in SHAPES if s not in present][:2],
                    "not_exhaustive_category_ids": [], "license": 1,
                    "flickr_url": "", "date_captured": "2013-11-14 16:03:19"}
            return scene, coco_id, info

        def modulated(data: _CocoJson, scene: Scene, info: dict, split: str) -> None:
            """One datapoint per positive category (its boxes) and per negative one (none)."""
            file_name = f"{split}/{info['id']:012d}.jpg"
            names = sorted({o.shape for o in scene.objects})
            names += [c["name"] for c in categories if c["id"] in info["neg_category_ids"]]
            for name in names:
                anns = [{"bbox": _bbox(o), "tokens_positive": [[0, len(name)]]}
                        for o in scene.objects if o.shape == name]
                data.add(_entry(file_name, scene, name, original_id=info["id"],
                                coco_url=info["coco_url"], dataset_name="lvis"), anns)

        minival = {"info": {"description": "LVIS v1 minival (synthetic miniature)"}, "licenses": [],
                   "images": [], "annotations": [], "categories": categories}
        val = {p: _CocoJson(f"lvis {p} val") for p in ("lvis1", "lvis10", "lvis")}
        for i in range(self.n):
            scene, coco_id, info = image("val2017", i)
            minival["images"].append(info)
            for o in scene.objects:
                cat = by_name[o.shape]
                x, y, w, h = _bbox(o)
                minival["annotations"].append({
                    "id": len(minival["annotations"]) + 1, "image_id": coco_id,
                    "category_id": cat["id"], "bbox": [x, y, w, h], "area": round(o.area, 2),
                    "segmentation": [[v for p in o.polygon for v in p]]})
                cat["instance_count"] += 1
            for name in {o.shape for o in scene.objects}:
                by_name[name]["image_count"] += 1
            for data in val.values():
                modulated(data, scene, info, "val2017")
        path = self.root / layout.LVIS / "lvis_v1_minival.json"
        _write_json(path, minival)
        self.done(path, len(minival["images"]))
        # Nested subsets of the train images: 1 % in 10 % in 100 %.
        train = {p: _CocoJson(f"lvis {p} train") for p in ("lvis1", "lvis10", "lvis")}
        for i in range(3 * self.n):
            scene, _, info = image("train2017", i)
            for prefix, limit in (("lvis1", self.n), ("lvis10", 2 * self.n), ("lvis", 3 * self.n)):
                if i < limit:
                    modulated(train[prefix], scene, info, "train2017")
        for prefix in train:
            self.write(train[prefix], self.ann(f"finetune_{prefix}_train.json"))
            self.write(val[prefix], self.ann(f"finetune_{prefix}_val.json"))

    # ------------------------------------------------------------------ CLEVR, CoGenT, Humans
    def clevr_image(self, family: str, folder: Path, split: str, i: int
                    ) -> tuple[np.random.Generator, Scene, Scene, str]:
        """(rng, scene as generated, scene at the CLEVR size, file name); text comes from the
        first, boxes from the second (object order is the same)."""
        rng = _rng(self.seed, family, split, i)
        scene = sample_scene(rng)
        big = _resized(scene, width=CLEVR_IMAGE_HW[1], height=CLEVR_IMAGE_HW[0])
        file_name = f"CLEVR_{split}_{i:06d}.png"
        _save(big, folder / split / file_name)
        return rng, scene, big, file_name

    @staticmethod
    def clevr_questions(rng: np.random.Generator, scene: Scene) -> list[Datapoint]:
        """Questions whose answer is a CLEVR answer (yes/no, a count or one of 15 attributes)."""
        ok = lambda a: a in ("yes", "no") or a.isdigit() or a in CLEVR_ATTRIBUTES  # noqa: E731
        return [dp for dp in make_questions(rng, scene, 4) if ok(dp.extra["answer"])][:2]

    def clevr(self) -> None:
        clevr = self.root / layout.CLEVR
        variants = (("CLEVR_v1.0", "", ("train", "val", "test")),
                    ("CLEVR_CoGenT_v1.0", "cogent_", ("trainA", "valA", "valB", "testA", "testB")))
        humans = {}
        for release, prefix, splits in variants:
            for split in splits:
                full, medium = _CocoJson(f"CLEVR {split} full"), _CocoJson(f"CLEVR {split} medium")
                questions = []
                for i in range(self.n):
                    rng, scene, big, file_name = self.clevr_image(
                        release, clevr / release / "images", split, i)
                    for q, dp in enumerate(self.clevr_questions(rng, scene)):
                        question = {"question_index": len(questions), "image_index": i,
                                    "image_filename": file_name, "question": dp.caption,
                                    "question_family_index": 0, "split": split}
                        if not split.startswith("test"):
                            question["answer"] = dp.extra["answer"]
                        questions.append(question)
                        entry = _entry(file_name, big, dp.caption, answer=dp.extra["answer"])
                        anns = _grounding(dp, big, key="tokens")
                        full.add(entry, anns)
                        if q == 0:  # CLEVR-Medium is a subset of the full set
                            medium.add(entry, anns)
                path = clevr / release / "questions" / f"CLEVR_{split}_questions.json"
                _write_json(path, {"info": {"split": split}, "questions": questions})
                self.done(path, len(questions))
                if split in ("train", "val", "trainA", "valA"):
                    folder = clevr / "annotations"
                    name = f"{split[:-1] if split.endswith('A') else split}.json"
                    self.write(full, folder / f"{prefix}full" / name)
                    self.write(medium, folder / f"{prefix}medium" / name)
                if prefix == "" and split in ("train", "val"):
                    humans[split] = questions
        # CLEVR-Humans: human questions about the CLEVR v1.0 images (test questions on val images).
        for split, source in (("train", "train"), ("val", "val"), ("test", "val")):
            path = clevr / "CLEVR-Humans" / f"CLEVR-Humans-{split}.json"
            _write_json(path, {"questions": [dict(q, split=split) for q in humans[source]]})
            self.done(path, len(humans[source]))

    def clevr_ref(self) -> None:
        folder = self.root / "clevr_ref+"
        for split in ("train", "val", "test"):
            data = _CocoJson(f"CLEVR-Ref+ {split}")
            for i in range(self.n):
                rng, scene, big, file_name = self.clevr_image(
                    "clevr_ref+", folder / "images", split, i)
                for target in rng.permutation(len(scene.objects)).tolist()[:2]:
                    expr = choose_expression(rng, referring_options(scene, target))
                    if expr is None:
                        continue
                    caption, root, anchor = expr.text()
                    anns = [{"bbox": _bbox(big.objects[target]), "tokens": [list(root)],
                             "isfinal": 1}]
                    if anchor is not None:  # the object the expression goes through
                        anns.append({"bbox": _bbox(big.objects[expr.anchor]),
                                     "tokens": [list(anchor)], "isfinal": 0})
                    data.add(_entry(file_name, big, caption), anns)
                if split == "train" and i == 0:
                    # An expression with no referent: a box-less record (no-object supervision).
                    desc = absent_description(rng, scene, ("color", "shape"))
                    if desc is not None:
                        data.add(_entry(file_name, big, f"the {desc.text()}"), [])
            self.write(data, folder / "annotations" / f"{split}.json")


def write_recipe_datasets(root, seed: int = 0, images_per_split: int = 3) -> dict[str, int]:
    """Write the miniature of every recipe's data under ``root`` (module docstring).

    Args:
        root: the datasets root (``$MDETR_DATASETS``); created.
        seed: everything is a function of it.
        images_per_split: images per split of each family (each gives 1-2 datapoints per family).

    Returns:
        ``{path relative to root: number of records}`` of every annotation file written, and
        ``"synthetic/text_encoder"``: 1 (the local text encoder to use as
        ``MODEL.MDETR.TEXT_ENCODER.NAME``).
    """
    root = Path(root)
    writer = _RecipeWriter(root, seed, images_per_split)
    generate_synthetic_dataset(root / "synthetic", seed=seed, num_train=images_per_split,
                               num_val=images_per_split, num_test=images_per_split,
                               text_hidden_size=32, text_layers=1, progress=False)
    writer.done(root / "synthetic" / "text_encoder", 1)
    for family in (writer.flickr, writer.refexp, writer.gqa, writer.pretrain, writer.phrasecut,
                   writer.lvis, writer.clevr, writer.clevr_ref):
        family()
    return writer.counts
