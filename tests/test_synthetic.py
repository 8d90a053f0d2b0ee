"""The synthetic grounding world: determinism, exact spans, unambiguous references, text encoder."""
import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mdetr_synthetic import language, registration, scenes, writers

# pycocotools' annToMask under numpy 2.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SEED = 3
SIZES = {"num_train": 10, "num_val": 3, "num_test": 3}


def _generate(root, **overrides):
    kwargs = dict(SIZES, seed=SEED, progress=False)
    kwargs.update(overrides)
    return writers.generate_synthetic_dataset(root, **kwargs)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, _generate(root)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _by_image(data):
    anns = {}
    for ann in data["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    return anns


def _all_files(root: Path):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_same_seed_gives_identical_bytes(dataset, tmp_path):
    root, _ = dataset
    _generate(tmp_path)
    first, second = _all_files(root), _all_files(tmp_path)
    assert sorted(first) == sorted(second)
    assert any(name.endswith(".png") for name in first)
    assert "text_encoder/model.safetensors" in first
    for name in first:
        assert first[name] == second[name], name


def test_other_seed_differs(dataset, tmp_path):
    root, out = dataset
    other = _generate(tmp_path, seed=SEED + 1, text_encoder=False)
    assert _load(other["synthetic_refexp_train"]) != _load(out["synthetic_refexp_train"])


def test_generation_is_idempotent(tmp_path):
    out = _generate(tmp_path, text_encoder=False, num_train=2, num_val=1, num_test=1)
    manifest = Path(out["manifest"])
    stamp = manifest.stat().st_mtime_ns
    _generate(tmp_path, text_encoder=False, num_train=2, num_val=1, num_test=1)
    assert manifest.stat().st_mtime_ns == stamp
    # Other parameters: regenerated, and no image of the larger earlier run is left behind.
    out = _generate(tmp_path, text_encoder=False, num_train=1, num_val=1, num_test=1)
    assert sorted(p.name for p in Path(out["image_root_train"]).iterdir()) == ["000000.png"]
    assert _load(out["manifest"])["params"]["num_train"] == 1


def test_layout_and_coco_api(dataset):
    from pycocotools.coco import COCO

    root, out = dataset
    for split in scenes.SPLITS:
        image_root = Path(out[f"image_root_{split}"])
        assert len(list(image_root.glob("*.png"))) == SIZES[f"num_{split}"]
        for family in writers.FAMILIES:
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(out[f"synthetic_{family}_{split}"])
            assert coco.getImgIds(), (family, split)
            for img in coco.loadImgs(coco.getImgIds()):
                assert img["dataset_name"] == f"synthetic_{family}"
                assert (image_root / img["file_name"]).is_file()
                for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
                    x, y, w, h = ann["bbox"]
                    assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
                    mask = coco.annToMask(ann)
                    assert mask.shape == (img["height"], img["width"]) and mask.sum() > 0
    with Image.open(Path(out["image_root_train"]) / "000000.png") as im:
        img = _load(out["synthetic_refexp_train"])["images"][0]
        assert im.size == (img["width"], img["height"]) and im.mode == "RGB"


def test_spans_are_exact_phrases(dataset):
    _, out = dataset
    noun = r"(circle|square|triangle|star|diamond|object)s?"
    phrase = re.compile(rf"^(the|a|an|two|three|four|five)( \w+)* {noun}$")
    for split in scenes.SPLITS:
        for family in writers.FAMILIES:
            data = _load(out[f"synthetic_{family}_{split}"])
            anns = _by_image(data)
            for img in data["images"]:
                caption = img["caption"]
                for ann in anns.get(img["id"], []):
                    for beg, end in ann["tokens_positive"]:
                        text = caption[beg:end]
                        assert text == text.strip() and (beg == 0 or caption[beg - 1] == " ")
                        assert end == len(caption) or caption[end] == " "
                        if family == "qa" and img["question_family"] == "count":
                            assert re.fullmatch(rf"(\w+ )*{noun}", text), text
                        else:
                            assert phrase.match(text), text
                if family == "refexp":
                    (ann,) = anns[img["id"]]  # exactly one box
                    assert ann["tokens_positive"][0][0] == 0
                if family == "flickr":
                    ann_spans = {tuple(s) for a in anns[img["id"]] for s in a["tokens_positive"]}
                    eval_spans = {tuple(s) for p in img["tokens_positive_eval"] for s in p}
                    assert ann_spans == eval_spans
                    assert caption.endswith(" .")


def _parse_refexp(caption):
    """Independent reading of ``the [superlative] [size] [color] noun [relation the ...]``."""
    desc = (r"(?:(small|large) )?(?:(red|green|blue|yellow|purple|orange) )?"
            r"(circle|square|triangle|star|diamond|object)")
    m = re.fullmatch(rf"the (?:(leftmost|rightmost|topmost|bottommost) )?{desc}"
                     rf"(?: (left of|right of|above|below) the {desc})?", caption)
    assert m, caption
    sup, size, color, shape, rel, a_size, a_color, a_shape = m.groups()
    return sup, (size, color, shape), rel, (a_size, a_color, a_shape)


def _matches(obj, words):
    size, color, shape = words
    return ((size is None or obj.size == size) and (color is None or obj.color == color)
            and (shape == "object" or obj.shape == shape))


def test_referred_object_is_unique(dataset):
    _, out = dataset
    seen_kinds = set()
    for split in scenes.SPLITS:
        data = _load(out[f"synthetic_refexp_{split}"])
        anns = _by_image(data)
        for img in data["images"]:
            scene = scenes.sample_scene(scenes.scene_rng(SEED, split, img["original_id"]))
            objs = scene.objects
            (ann,) = anns[img["id"]]
            boxes = [[round(v, 2) for v in o.bbox] for o in objs]
            target = boxes.index(ann["bbox"])
            sup, words, rel, anchor_words = _parse_refexp(img["caption"])
            candidates = [i for i, o in enumerate(objs) if _matches(o, words)]
            if rel is not None:
                seen_kinds.add("relation")
                anchors = [i for i, o in enumerate(objs) if _matches(o, anchor_words)]
                assert len(anchors) == 1, img["caption"]
                (ax, ay) = objs[anchors[0]].center
                sx, sy = {"left of": (-1, 0), "right of": (1, 0), "above": (0, -1),
                          "below": (0, 1)}[rel]
                candidates = [i for i in candidates if i != anchors[0] and
                              (objs[i].center[0] - ax) * sx + (objs[i].center[1] - ay) * sy > 0]
            if sup is not None:
                seen_kinds.add("superlative")
                key = {"leftmost": lambda o: -o.center[0], "rightmost": lambda o: o.center[0],
                       "topmost": lambda o: -o.center[1], "bottommost": lambda o: o.center[1]}[sup]
                best = max(key(objs[i]) for i in candidates)
                candidates = [i for i in candidates if key(objs[i]) == best]
            assert candidates == [target], img["caption"]
    assert seen_kinds == {"relation", "superlative"}


def test_text_blind_baseline_is_weak():
    hits = total = 0
    targets_by_rank = np.zeros(scenes.MAX_OBJECTS)
    for index in range(60):
        rng = scenes.scene_rng(0, "train", index)
        scene = scenes.sample_scene(rng)
        areas = np.array([o.area for o in scene.objects])
        for dp in language.make_refexps(rng, scene, 2):
            target = dp.boxes[0][0]
            hits += int(areas.argmax() == target)
            targets_by_rank[int((areas > areas[target]).sum())] += 1
            total += 1
    assert total > 100
    assert hits / total < 0.45  # about 1/n with 2-5 objects
    assert (targets_by_rank[1:] > 0).sum() >= 3


def test_questions_are_consistent(dataset):
    from mdetr_d2.structures import GQA_ANSWER_TYPES

    _, out = dataset
    answer2id, by_type = _load(out["qa_answer2id"]), _load(out["qa_answer2id_by_type"])
    assert len(language.QA_ATTRIBUTES) <= 15  # also fits the CLEVR attribute head
    families = set()
    for split in scenes.SPLITS:
        data = _load(out[f"synthetic_qa_{split}"])
        anns = _by_image(data)
        for img in data["images"]:
            n = len(anns.get(img["id"], []))
            family, answer = img["question_family"], img["answer"]
            families.add(family)
            assert img["question_type"] in GQA_ANSWER_TYPES
            assert answer in answer2id and answer in by_type[f"answer_{img['question_type']}"]
            if family == "count":
                assert img["answer_type"] == "number" and int(answer) == n
            elif family == "exist":
                assert img["answer_type"] == "binary" and (answer == "yes") == (n > 0)
            else:
                assert (img["answer_type"] == "attribute" and answer in language.QA_ATTRIBUTES
                        and n >= 1)
                values = {"color": scenes.COLORS, "shape": scenes.SHAPES,
                          "size": scenes.SIZES}[family]
                assert answer in values
                # The question must not give its answer away, not even through an anchor object.
                assert answer not in img["caption"].split()
    assert families == {"exist", "count", "color", "shape", "size"}


def test_tokenizer_is_fast_and_maps_spans(dataset):
    from transformers import AutoTokenizer

    _, out = dataset
    tokenizer = AutoTokenizer.from_pretrained(out["text_encoder"])
    assert tokenizer.is_fast
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 4]) == specials
    # Every word of the grammar is one token, with or without the leading space.
    for word in ("circle", "diamonds", "purple", "bottommost", "above"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1
        assert len(tokenizer("the " + word, add_special_tokens=False)["input_ids"]) == 2
    for family in writers.FAMILIES:
        data = _load(out[f"synthetic_{family}_val"])
        anns = _by_image(data)
        captions = [img["caption"] for img in data["images"]]
        enc = tokenizer(captions, padding="longest", return_tensors="pt",
                        return_offsets_mapping=True)
        for b, img in enumerate(data["images"]):
            ids = enc["input_ids"][b][enc["attention_mask"][b].bool()]
            assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids, skip_special_tokens=True) == img["caption"]
            assert enc.char_to_token(b, img["caption"].index(" ")) is None  # trim_offsets (§1.6)
            for ann in anns.get(img["id"], []):
                for beg, end in ann["tokens_positive"]:
                    first, last = enc.char_to_token(b, beg), enc.char_to_token(b, end - 1)
                    assert first is not None and last is not None
                    offsets = enc["offset_mapping"][b]
                    start, stop = offsets[first][0], offsets[last][1]
                    assert (int(start), int(stop)) == (beg, end)


def test_text_encoder_loads_offline(dataset):
    from mdetr_d2.modeling.text_encoder import TextEncoder
    from safetensors.torch import load_file

    _, out = dataset
    encoder = TextEncoder(name=out["text_encoder"], hidden_dim=32, pretrained=True).eval()
    saved = load_file(str(Path(out["text_encoder"]) / "model.safetensors"))
    state = encoder.body.state_dict()
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    captions = [img["caption"] for img in _load(out["synthetic_flickr_train"])["images"][:4]]
    with torch.no_grad():
        encoded = encoder(captions, torch.device("cpu"))
    assert encoded.features.shape[0] == 4 and encoded.features.shape[2] == 32
    assert torch.isfinite(encoded.features).all()
    assert encoder.body.config.max_position_embeddings >= encoded.features.shape[1] + 2


def test_cli_writes_dataset(tmp_path, capsys):
    import runpy

    tool = Path(__file__).resolve().parents[1] / "tools" / "make_synthetic.py"
    module = runpy.run_path(str(tool))
    module["main"](["--root", str(tmp_path), "--num-train", "2", "--num-val", "1",
                    "--num-test", "1", "--no-text-encoder"])
    printed = capsys.readouterr().out
    assert "synthetic_refexp_train" in printed
    assert (tmp_path / "annotations" / "synthetic_qa_test.json").is_file()


def test_register_load_map_and_evaluate(dataset):
    """The registered datasets go through the project's loader, mapper and evaluators unchanged."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from mdetr_d2.data import MDETRDatasetMapper
    from mdetr_d2.evaluation.flickr import FlickrEvaluator

    root, out = dataset
    registration.register_synthetic(root)
    assert registration.register_synthetic(root) == []  # same root: kept
    for family in writers.FAMILIES:
        name = f"synthetic_{family}_val"
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == registration.EVALUATOR_TYPES[family]
        mapper = MDETRDatasetMapper(
            False, augmentations=[], tokenizer_name=out["text_encoder"], use_masks=True,
            qa_kind="gqa" if family == "qa" else None,
            gqa_answer_vocab=getattr(meta, "gqa_answer_vocab", None),
            gqa_answer_vocab_by_type=getattr(meta, "gqa_answer_vocab_by_type", None),
        )
        records = DatasetCatalog.get(name)
        for record in records:
            mapped = mapper(dict(record))
            instances = mapped["instances"]
            assert len(instances) == len(record["annotations"])
            assert (instances.gt_positive_map.sum(1) > 0).all()
            if family == "qa":
                assert mapped["answers"]["answer"] >= 0
    # Perfect phrase grounding scores 1 with the Flickr evaluator reading flickr_entities/.
    evaluator = FlickrEvaluator("synthetic_flickr_val")
    evaluator.reset()
    for record in DatasetCatalog.get("synthetic_flickr_val"):
        ranked = []
        for (span,) in record["tokens_positive_eval"]:
            boxes = [a["bbox"] for a in record["annotations"] if a["tokens_positive"][0] == span]
            ranked.append(np.array([[x, y, x + w, y + h] for x, y, w, h in boxes]))
        evaluator.add_ranked(record["original_img_id"], record["sentence_id"], ranked)
    assert evaluator.evaluate()["flickr"]["R@1_all"] == 1.0


def test_ground_truth_scores_one_in_the_registered_evaluators(dataset):
    """Ground truth as the prediction scores 1 in every row of the evaluators the registration picks:
    P@1 overall and per expression type, and class-agnostic box AP (annotation ids used to start at
    0, which pycocotools never matches: AP stayed below 1)."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, Instances

    from mdetr_d2.evaluation import build_mdetr_evaluators

    root, out = dataset
    registration.register_synthetic(root)
    evaluator = build_mdetr_evaluators("synthetic_refexp_val")
    evaluator.reset()
    types = {img["expression_type"] for img in _load(out["synthetic_refexp_val"])["images"]}
    for record in DatasetCatalog.get("synthetic_refexp_val"):
        x, y, w, h = record["annotations"][0]["bbox"]
        instances = Instances((record["height"], record["width"]))
        instances.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h], [0.0, 0.0, 4.0, 4.0]]))
        instances.scores = torch.tensor([0.9, 0.1])
        instances.pred_classes = torch.zeros(2, dtype=torch.long)
        evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
    assert types <= set(language.EXPRESSION_TYPES) and len(types) >= 2
    results = evaluator.evaluate()
    assert results["refexp"]["synthetic_refexp/P@1"] == 1.0
    assert {f"synthetic_refexp/{t}/P@1" for t in types} <= set(results["refexp"])
    assert all(v == 1.0 for k, v in results["refexp"].items() if k.endswith("/P@1"))
    assert results["bbox"]["AP50"] == pytest.approx(1.0)
