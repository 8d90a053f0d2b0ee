"""Class prompts in the model: the official per-class arithmetic, joined prompts, the cache."""
import re

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from mdetr_d2.engine.ema import ModelEMA
from mdetr_d2.modeling.class_prompts import ClassPrompts
from mdetr_d2.structures import clean_category_name

from .conftest import tiny_mdetr_cfg

# Parentheses, underscores and a double space, as in LVIS names; five queries each.
NAMES = ["cat", "dog_(pet)", "red_shirt", "small  dog", "blue square", "table_(furniture)_top",
         "man"]


def _official_clean(name):
    # The three substitutions of the official scripts/eval_lvis.py, written out independently.
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    return re.sub(r"  ", " ", name)


def _model(text_encoder, **overrides):
    torch.manual_seed(0)
    return build_model(tiny_mdetr_cfg(text_encoder, **overrides)).eval()


def _input(seed=0, classes=NAMES):
    pixels = np.random.default_rng(seed).integers(0, 255, (3, 64, 80))
    image = torch.from_numpy(pixels.astype("float32"))
    return {"image": image, "height": 96, "width": 120, "classes": classes}


def _image_features(model, x):
    images = model.preprocess_image([x])
    return model.encode_image(images.tensor, model.padding_mask(images))


def test_names_are_cleaned_as_the_official_evaluation():
    for name in NAMES + ["bow_(weapon)", "a (b) c (d) e", "pan_(for_cooking)", "x__y", "aerosol"]:
        assert clean_category_name(name) == _official_clean(name)
    assert clean_category_name("bow_(weapon)") == "bow "  # trailing space kept, as officially


def test_per_class_equals_a_plain_loop_over_caption_chunks(tiny_text_encoder):
    """per_class = the official LVIS arithmetic: names cleaned, encoded in chunks, the image
    encoded once, every (caption, query) a detection labelled with its caption's class, scored
    1 - p(no-object)."""
    model = _model(tiny_text_encoder, **{"MODEL.MDETR.CLASS_PROMPTS.CHUNK_SIZE": 3,
                                         "TEST.DETECTIONS_PER_IMAGE": 7})
    x = _input()
    with torch.no_grad():
        out = model([x])[0]
        captions = [_official_clean(n) for n in NAMES]
        image = _image_features(model, x)
        boxes, scores, labels = [], [], []
        for start in range(0, len(captions), 3):
            chunk = captions[start:start + 3]
            text = model.encode_text(chunk)
            outputs = model.decode(model.encode(image.expand(len(chunk)), None, text))
            prob = outputs["pred_logits"].softmax(-1)
            scores.append((1 - prob[..., -1]).flatten())
            cx, cy, w, h = outputs["pred_boxes"].reshape(-1, 4).unbind(-1)
            xyxy = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
            boxes.append(xyxy * torch.tensor([120, 96, 120, 96]))
            labels.append(torch.arange(start, start + len(chunk)).repeat_interleave(prob.shape[1]))
    every = out["all_instances"]
    assert every.image_size == (96, 120) and len(every) == len(NAMES) * 5
    torch.testing.assert_close(every.scores, torch.cat(scores), atol=1e-6, rtol=0)
    torch.testing.assert_close(every.pred_boxes.tensor, torch.cat(boxes), atol=1e-4, rtol=0)
    assert torch.equal(every.pred_classes, torch.cat(labels))
    # The capped instances are the 7 best, by score, with the class name as the phrase.
    best = out["instances"]
    assert len(best) == 7
    torch.testing.assert_close(best.scores, every.scores.topk(7).values)
    assert list(best.pred_phrases) == [captions[c] for c in best.pred_classes.tolist()]
    assert all(e - b == len(p) for (b, e), p in zip(best.pred_spans.tolist(), best.pred_phrases))


def test_joined_prompts_fit_the_budget_and_label_by_span_mass(tiny_text_encoder):
    model = _model(tiny_text_encoder, **{"MODEL.MDETR.CLASS_PROMPTS.STYLE": "joined",
                                         "MODEL.MDETR.CLASS_PROMPTS.MAX_PROMPT_TOKENS": 12,
                                         "MODEL.MDETR.CLASS_PROMPTS.CHUNK_SIZE": 2})
    tokenizer = model.text_encoder.tokenizer
    prompts = ClassPrompts.build(NAMES, tokenizer, "joined", 2, 12)
    texts = [c for chunk in prompts.chunks for c in chunk.captions]
    assert len(texts) > 1 and all(len(tokenizer(t)["input_ids"]) <= 12 for t in texts)
    words = [" ".join(_official_clean(n).split()) for n in NAMES]
    assert " . ".join(texts).split(" . ") == words  # every class once, in order, one span each

    x = _input(1)
    with torch.no_grad():
        every = model([x])[0]["all_instances"]
        image = _image_features(model, x)
        scores, labels = [], []
        cls = 0
        for text in texts:
            outputs = model.decode(model.encode(image, None, model.encode_text([text])))
            prob = outputs["pred_logits"][0].softmax(-1)
            encoding = tokenizer(text)
            masses, begin = [], 0
            for name in text.split(" . "):
                chars = range(begin, begin + len(name))
                tokens = {encoding.char_to_token(c) for c in chars} - {None}
                masses.append(prob[:, sorted(tokens)].sum(-1))
                begin += len(name) + 3
            score, best = torch.stack(masses, -1).max(-1)
            scores.append(score)
            labels.append(best + cls)
            cls += len(masses)
    torch.testing.assert_close(every.scores, torch.cat(scores), atol=1e-6, rtol=0)
    assert torch.equal(every.pred_classes, torch.cat(labels))


def test_prompts_are_encoded_once_and_again_when_weights_change(tiny_text_encoder):
    model = _model(tiny_text_encoder, **{"MODEL.MDETR.CLASS_PROMPTS.CHUNK_SIZE": 4})
    encoded = []
    encode_text = model.encode_text
    model.encode_text = lambda captions: encoded.append(len(captions)) or encode_text(captions)

    def scores(m, seed=0):
        with torch.no_grad():
            return m([_input(seed)])[0]["all_instances"].scores

    first = scores(model)
    scores(model, 1)
    assert encoded == [4, 3]  # two chunks, once for both images
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.text_encoder.resizer.layer_norm.bias.add_(0.5)  # in place, as an optimizer step
    changed = scores(model)
    assert encoded == [4, 3, 4, 3] and not torch.allclose(changed, first)
    model.load_state_dict(state)  # a checkpoint load
    torch.testing.assert_close(scores(model), first)
    assert len(encoded) == 6
    model.double()  # new parameter tensors: encoded again, in float64
    torch.testing.assert_close(scores(model).float(), first, atol=1e-4, rtol=0)
    assert len(encoded) == 8

    # The evaluated EMA copy follows its own updates (state-dict in-place averaging).
    model.float()
    del model.encode_text  # the copy must encode with its own weights
    ema = ModelEMA(model, decay=0.5)
    before = scores(ema.module)
    trained = _model(tiny_text_encoder, **{"MODEL.MDETR.CLASS_PROMPTS.CHUNK_SIZE": 4})
    with torch.no_grad():
        for p in trained.text_encoder.parameters():
            p.add_(0.1)
    ema.update(trained)
    assert not torch.allclose(scores(ema.module), before)


def test_mixed_batch_and_training_input_without_caption(tiny_text_encoder):
    model = _model(tiny_text_encoder)
    grounded = {"image": _input()["image"], "caption": "the cat on the left", "height": 64,
                "width": 80}
    with torch.no_grad():
        both = model([grounded, _input(1)])
        alone = model([_input(1)])[0]
        caption_alone = model([grounded])[0]
    assert "all_instances" not in both[0]
    assert both[0]["instances"].pred_phrases[0] in grounded["caption"]
    torch.testing.assert_close(both[0]["instances"].scores, caption_alone["instances"].scores)
    torch.testing.assert_close(both[1]["all_instances"].scores, alone["all_instances"].scores)
    model.train()
    with pytest.raises(ValueError, match="no 'caption'"):
        model([_input()])


def test_bad_class_lists_are_refused(tiny_text_encoder):
    tokenizer = _model(tiny_text_encoder).text_encoder.tokenizer
    with pytest.raises(ValueError, match="at least one class"):
        ClassPrompts.build([], tokenizer)
    with pytest.raises(ValueError, match=r"class 1 \('\(unknown\)'\) is empty"):
        ClassPrompts.build(["cat", "(unknown)"], tokenizer)
    with pytest.raises(ValueError, match="alone takes more than 4 tokens"):
        ClassPrompts.build(["a man in a red shirt"], tokenizer, "joined", 32, 4)
    with pytest.raises(ValueError, match="DEFAULT_CAPTION or MODEL.MDETR.CLASS_PROMPTS.NAMES, not"):
        _model(tiny_text_encoder, **{"MODEL.MDETR.DEFAULT_CAPTION": "a cat",
                                     "MODEL.MDETR.CLASS_PROMPTS.NAMES": ["cat"]})
