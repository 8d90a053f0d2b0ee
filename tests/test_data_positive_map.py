"""Caption spans -> binary positive maps, against the official det_r18 targets."""

import logging

import pytest
import torch

from mdetr_d2.data import MDETRDatasetMapper, load_mdetr_json
from mdetr_d2.structures import (
    build_tokenizer,
    create_positive_map,
    create_positive_map_from_caption,
    span_to_token_range,
)


@pytest.fixture(scope="module")
def tokenizer(official_fixtures):
    return build_tokenizer(str(official_fixtures / "tiny_roberta"))


@pytest.mark.parametrize(
    "variant, file",
    [
        ("main", "annotations.json"),
        ("fallback", "annotations_fallback.json"),
        ("empty", "annotations_empty.json"),
    ],
)
def test_det_r18_positive_maps_match_official(official_fixtures, variant, file):
    case = torch.load(
        official_fixtures / "det_r18" / "case.pt", map_location="cpu", weights_only=True
    )
    records = load_mdetr_json(
        str(official_fixtures / "det_r18" / file), str(official_fixtures / "images")
    )
    mapper = MDETRDatasetMapper(
        False, augmentations=[], tokenizer_name=str(official_fixtures / "tiny_roberta")
    )
    for record, target in zip(records, case["targets"][variant], strict=True):
        out = mapper(record)
        inst = out["instances"]
        assert torch.equal(inst.gt_positive_map, (target["positive_map"] > 0).float())
        assert torch.equal(out["positive_map_eval"], target["positive_map_eval"].bool())
        # crowd and zero-width boxes dropped, negative coordinates clamped (official loader)
        h, w = target["orig_size"].tolist()
        cx, cy, bw, bh = target["boxes"].unbind(-1)
        official_xyxy = torch.stack(
            [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1
        ) * torch.tensor([w, h, w, h])
        torch.testing.assert_close(inst.gt_boxes.tensor, official_xyxy, atol=1e-4, rtol=0)
    # the collated binary map of the batch is the concatenation of ours
    ours = torch.cat([mapper(r)["instances"].gt_positive_map for r in records])
    assert torch.equal(ours, case["positive_map"][variant])


def test_span_starting_on_space_uses_fallback(tokenizer):
    caption = "a man in a red shirt"
    tok = tokenizer(caption)
    assert tok.char_to_token(1) is None  # the space before "man" maps to no token
    assert span_to_token_range(tok, 1, 5) == span_to_token_range(tok, 2, 5)  # " man" -> "man"
    assert span_to_token_range(tok, 9, 21) == span_to_token_range(
        tok, 9, 20
    )  # "a red shirt " -> end fallback
    pm = create_positive_map(tok, [[[1, 5]], [[9, 21]]])
    assert pm.dtype == torch.float32 and set(pm.unique().tolist()) <= {0.0, 1.0}
    assert pm[0].nonzero().flatten().tolist() == [2]
    # an all-space span (no token within the fallback reach) is skipped, as officially
    assert create_positive_map(tok, [[[1, 2]]]).sum() == 0


def test_long_multi_sentence_caption(tokenizer):
    sentences = ["a man in a red shirt.", "the cat on the left.", "a small dog holds a cup."] * 4
    caption = " ".join(sentences)
    offset = caption.rindex("a small dog")
    pm = create_positive_map_from_caption(
        tokenizer, caption, [[[offset, offset + len("a small dog")]]]
    )
    tok = tokenizer(caption)
    first, last = tok.char_to_token(offset), tok.char_to_token(offset + len("a small dog") - 1)
    assert pm[0].nonzero().flatten().tolist() == list(range(first, last + 1))
    assert first > 30


def test_span_past_255_tokens_warns_with_caption(tokenizer, caplog):
    caption = " ".join(["zebra quixotic"] * 80) + " the dog"
    tok = tokenizer(caption)
    assert len(tok["input_ids"]) > 256
    begin = caption.rindex("the dog")
    with caplog.at_level(logging.WARNING, logger="mdetr_d2.structures.positive_map"):
        pm = create_positive_map(tok, [[[0, 5]], [[begin, begin + 7]]], caption=caption)
    assert pm.shape == (2, 256)
    assert pm[1].sum() == 0 and pm[:, 255].sum() == 0  # never the "no object" slot
    assert pm[0].sum() > 0
    assert any(
        "zebra quixotic" in r.getMessage() and "0..254" in r.getMessage() for r in caplog.records
    )
