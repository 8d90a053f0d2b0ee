"""Hungarian matcher and MDETR losses: official-code parity (fixtures) and small hand-made cases."""

import math

import pytest
import torch
from detectron2.config import get_cfg

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.modeling import criterion as criterion_module
from mdetr_d2.modeling.criterion import MDETRCriterion
from mdetr_d2.modeling.matcher import HungarianMatcher

# Criterion settings of each official case (summary.json args: dec_layers, aux_loss, heads).
CASE_SETTINGS = {
    "det_r18": dict(num_aux_layers=2),
    "seg_eb0": dict(num_aux_layers=1, masks=True, contrastive_align_loss=False),
    "gqa_eb0": dict(num_aux_layers=0, qa_head="gqa", contrastive_align_loss=False),
    "clevr_eb0": dict(num_aux_layers=2, qa_head="clevr", predict_final=True),
}
PARITY = [
    ("det_r18", "main"),
    ("det_r18", "fallback"),
    ("det_r18", "empty"),
    ("seg_eb0", "main"),
    ("gqa_eb0", "main"),
    ("clevr_eb0", "main"),
]
# Official weight-dict keys whose loss the official criterion never returns (our weight_dict omits
# them): the aux copies of the final-layer-only mask losses and of the once-per-batch QA losses.
NEVER_RETURNED = ("loss_mask_", "loss_dice_", "loss_answer_")


@pytest.fixture(scope="module")
def tokenizer(official_fixtures):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(official_fixtures / "tiny_roberta"))


@pytest.fixture(scope="module")
def load_case(official_fixtures):
    cache = {}

    def load(name):
        if name not in cache:
            cache[name] = torch.load(
                official_fixtures / name / "case.pt", map_location="cpu", weights_only=True
            )
        return cache[name]

    return load


def _coefs(weight_dict):
    """Constructor weights from an official weight dict (absent keys keep their defaults)."""
    names = {
        "loss_ce": "ce_loss_coef",
        "loss_bbox": "bbox_loss_coef",
        "loss_giou": "giou_loss_coef",
        "loss_contrastive_align": "contrastive_align_loss_coef",
        "loss_mask": "mask_loss_coef",
        "loss_dice": "dice_loss_coef",
        "loss_isfinal": "isfinal_loss_coef",
        "loss_answer_type": "qa_loss_coef",
    }
    return {arg: float(weight_dict[key]) for key, arg in names.items() if key in weight_dict}


class RecordingMatcher(HungarianMatcher):
    """The Hungarian matcher, keeping the indices of every call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def forward(self, outputs, targets):
        indices = super().forward(outputs, targets)
        self.calls.append(indices)
        return indices

    def layers(self) -> dict:
        """The indices of the latest criterion call by layer, named as in the official fixtures
        (the criterion matches the final layer first, then the auxiliary layers in order)."""
        return {("final" if i == 0 else f"aux_{i - 1}"): c for i, c in enumerate(self.calls)}


def _build(case_name, weight_dict, official_fallback=True):
    return MDETRCriterion(
        matcher=RecordingMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0),
        official_contrastive_fallback=official_fallback,
        **CASE_SETTINGS[case_name],
        **_coefs(weight_dict),
    )


def _run(load_case, tokenizer, case_name, variant, official_fallback=True):
    case = load_case(case_name)
    criterion = _build(case_name, case["losses"][variant]["weight_dict"], official_fallback)
    outputs = dict(case["outputs"])
    outputs["tokenized"] = tokenizer(case["captions"], padding="longest", return_tensors="pt")
    losses = criterion(outputs, case["targets"][variant], case.get("answers"))
    return criterion, losses, case["losses"][variant]


def _assert_indices_equal(ours, ref):
    assert len(ours) == len(ref)
    for (src, tgt), (ref_src, ref_tgt) in zip(ours, ref):
        assert torch.equal(src, ref_src.to(torch.int64))
        assert torch.equal(tgt, ref_tgt.to(torch.int64))


@pytest.mark.parametrize("case_name,variant", PARITY)
def test_official_parity(load_case, tokenizer, case_name, variant):
    criterion, losses, ref = _run(load_case, tokenizer, case_name, variant)

    assert set(losses) == set(ref["loss_dict"])
    for key, value in ref["loss_dict"].items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=0, msg=key)

    assert set(criterion.matcher.layers()) == set(ref["indices"])
    for layer, ref_indices in ref["indices"].items():
        _assert_indices_equal(criterion.matcher.layers()[layer], ref_indices)

    # weight_dict: the official weights, minus keys the official criterion never returns.
    official = ref["weight_dict"]
    assert all(official[k] == w for k, w in criterion.weight_dict.items())
    assert {k for k in official if not k.startswith(NEVER_RETURNED)} <= set(criterion.weight_dict)
    total = sum(
        v * criterion.weight_dict[k] for k, v in losses.items() if k in criterion.weight_dict
    )
    torch.testing.assert_close(total, ref["weighted_total"], rtol=1e-5, atol=0)


def test_positive_map_is_collated_binary_map(load_case):
    case = load_case("det_r18")
    for variant, targets in case["targets"].items():
        ours = torch.cat([t["positive_map"] > 0 for t in targets]).float()
        assert torch.equal(ours, case["positive_map"][variant])


@pytest.mark.parametrize("case_name,variant", [("det_r18", "fallback"), ("clevr_eb0", "main")])
def test_fallback_switch(load_case, tokenizer, case_name, variant):
    """Switch off: span positions from each caption's positive map; only the contrastive terms move.

    det_r18/fallback: whitespace-bounded spans of caption 1 resolve on caption 0 (README, det_r18).
    clevr_eb0: the span "metal cylinders " of caption 2 ends on a space; the official end fallback
    looks up characters 23 and 22 of caption 0 (21 characters long), finds nothing and drops it.
    """
    criterion, losses, ref = _run(load_case, tokenizer, case_name, variant, official_fallback=False)
    for key, value in ref["loss_dict"].items():
        if "contrastive" in key:
            assert not math.isclose(float(losses[key]), float(value), rel_tol=1e-3), key
        else:
            torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=0, msg=key)
    for layer, ref_indices in ref["indices"].items():
        _assert_indices_equal(criterion.matcher.layers()[layer], ref_indices)


@pytest.mark.parametrize("variant", ["main", "empty"])
def test_switch_off_matches_official_without_fallbacks(load_case, tokenizer, variant):
    """Without whitespace spans both lookups agree: the corrected path gives the official values."""
    _, losses, ref = _run(load_case, tokenizer, "det_r18", variant, official_fallback=False)
    for key, value in ref["loss_dict"].items():
        torch.testing.assert_close(losses[key], value, rtol=1e-5, atol=0, msg=key)


def test_contrastive_positions_from_positive_map(load_case, tokenizer):
    """Fallback variant, image 1: the fixed lookup uses the right caption (README, det_r18)."""
    case = load_case("det_r18")
    criterion = _build(
        "det_r18", case["losses"]["fallback"]["weight_dict"], official_fallback=False
    )
    targets = case["targets"]["fallback"]
    tokenized = tokenizer(case["captions"], padding="longest", return_tensors="pt")
    indices = [
        (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])),
        (torch.tensor([0, 1]), torch.tensor([0, 1])),
    ]
    flat = criterion._flatten_indices(indices, targets, torch.device("cpu"))
    shape = (2, 10, tokenized["input_ids"].shape[1])
    fixed = criterion._contrastive_positives(
        shape, tokenized, targets, indices, flat[:2], flat[2], "cpu"
    )
    criterion.official_contrastive_fallback = True
    official = criterion._contrastive_positives(
        shape, tokenized, targets, indices, flat[:2], flat[2], "cpu"
    )
    # "the cat " → tokens 1..2 (official end fallback reads caption 0: 1..3);
    # " the left" → tokens 4..5 (official begin fallback reads caption 0: 5..5).
    assert fixed[1, 0].nonzero().flatten().tolist() == [1, 2]
    assert fixed[1, 1].nonzero().flatten().tolist() == [4, 5]
    assert official[1, 0].nonzero().flatten().tolist() == [1, 2, 3]
    assert official[1, 1].nonzero().flatten().tolist() == [5]
    assert torch.equal(fixed[0], official[0])


# ---------------------------------------------------------------------------- hand-made cases


def _box_xyxy(b):
    cx, cy, w, h = b
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _giou(a, b):
    ax0, ay0, ax1, ay1 = _box_xyxy(a)
    bx0, by0, bx1, by1 = _box_xyxy(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def test_cost_formula_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0, 1.0], [0.0, 3.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0]]])
    pred = [[0.5, 0.5, 0.4, 0.4], [0.3, 0.6, 0.2, 0.3], [0.7, 0.2, 0.2, 0.2]]
    boxes = [[0.32, 0.58, 0.2, 0.3], [0.5, 0.5, 0.5, 0.4]]
    # Target 0 ↔ tokens {1, 2}; target 1 ↔ token {0}. The normalized map must act as binary.
    pmap = torch.tensor([[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0]])
    outputs = {"pred_logits": logits, "pred_boxes": torch.tensor([pred])}
    targets = [{"boxes": torch.tensor(boxes), "positive_map": pmap}]
    matcher = HungarianMatcher(cost_class=1.0, cost_bbox=5.0, cost_giou=2.0)

    prob = logits[0].softmax(-1).tolist()
    tokens = [[1, 2], [0]]
    expected = torch.tensor(
        [
            [
                -sum(prob[q][t] for t in tokens[j])
                + 5 * sum(abs(p - b) for p, b in zip(pred[q], boxes[j]))
                - 2 * _giou(pred[q], boxes[j])
                for j in range(2)
            ]
            for q in range(3)
        ]
    )
    cost = matcher.cost_matrix(outputs, targets)
    torch.testing.assert_close(cost[0], expected, rtol=1e-6, atol=1e-6)
    assert cost.dtype == torch.float32

    ((src, tgt),) = matcher(outputs, targets)
    assert src.tolist() == [0, 1] and tgt.tolist() == [
        1,
        0,
    ]  # query 1 fits target 0's box and tokens
    assert src.dtype == tgt.dtype == torch.int64


def test_matcher_fp32_under_autocast():
    torch.manual_seed(0)
    outputs = {
        "pred_logits": torch.randn(2, 5, 256),
        "pred_boxes": torch.rand(2, 5, 4) * 0.5 + 0.25,
    }
    targets = [
        {"boxes": torch.rand(n, 4) * 0.5 + 0.25, "positive_map": (torch.rand(n, 256) > 0.9).float()}
        for n in (2, 3)
    ]
    matcher = HungarianMatcher()
    reference = matcher.cost_matrix(outputs, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = matcher.cost_matrix(outputs, targets)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, reference)


def _random_batch(num_boxes, num_queries=6, num_tokens=7, seed=0, masks=False):
    g = torch.Generator().manual_seed(seed)
    batch = len(num_boxes)
    outputs = {
        "pred_logits": torch.randn(batch, num_queries, 256, generator=g, requires_grad=True),
        "pred_boxes": (
            torch.rand(batch, num_queries, 4, generator=g) * 0.5 + 0.25
        ).requires_grad_(),
        "proj_queries": torch.nn.functional.normalize(
            torch.randn(batch, num_queries, 8, generator=g), dim=-1
        ),
        "proj_tokens": torch.nn.functional.normalize(
            torch.randn(batch, num_tokens, 8, generator=g), dim=-1
        ),
        "pred_isfinal": torch.randn(batch, num_queries, 1, generator=g),
    }
    outputs["aux_outputs"] = [
        {
            k: outputs[k].detach().clone()
            for k in ("pred_logits", "pred_boxes", "proj_queries", "pred_isfinal")
        }
    ]
    if masks:
        outputs["pred_masks"] = torch.randn(
            batch, num_queries, 5, 6, generator=g, requires_grad=True
        )
    targets = []
    for n in num_boxes:
        pmap = torch.zeros(n, 256)
        for j in range(n):
            pmap[j, 1 + j % (num_tokens - 2)] = 1
        target = {
            "boxes": torch.rand(n, 4, generator=g) * 0.4 + 0.3,
            "positive_map": pmap,
            "tokens_positive": [[[0, 1]] for _ in range(n)],
            "isfinal": torch.ones(n),
        }
        if masks:
            target["masks"] = (torch.rand(n, 20, 24, generator=g) > 0.5).to(torch.uint8)
        targets.append(target)
    return outputs, targets


@pytest.mark.parametrize("num_boxes", [(2, 0), (0, 0)])
def test_images_without_boxes(num_boxes):
    outputs, targets = _random_batch(num_boxes, masks=True)
    criterion = MDETRCriterion(
        matcher=RecordingMatcher(), num_aux_layers=1, masks=True, predict_final=True
    )
    losses = criterion(outputs, targets)
    assert all(torch.isfinite(v).all() for v in losses.values())
    for src, tgt in criterion.matcher.layers()["final"][1:]:
        assert len(src) == len(tgt) == 0
    if sum(num_boxes) == 0:
        for key in ("loss_bbox", "loss_giou", "loss_contrastive_align", "loss_mask", "loss_dice"):
            assert losses[key].item() == 0.0, key
        # Only no-object terms: eos_coef · Σ −log p(no-object), N_boxes clamped to 1.
        expected = -0.1 * outputs["pred_logits"].log_softmax(-1)[..., -1].sum()
        torch.testing.assert_close(losses["loss_ce"], expected)
        assert float(losses["accuracy_isfinal"]) == 1.0
    total = sum(
        v * criterion.weight_dict[k] for k, v in losses.items() if k in criterion.weight_dict
    )
    total.backward()
    assert outputs["pred_logits"].grad is not None and outputs["pred_masks"].grad is not None


def test_num_boxes_averaged_over_processes(monkeypatch):
    outputs, targets = _random_batch((3, 1))
    criterion = MDETRCriterion(matcher=HungarianMatcher(), contrastive_align_loss=False)
    single = criterion(outputs, targets)
    # Two processes; the other one has 7 boxes: N_boxes = (4 + 7) / 2.
    monkeypatch.setattr(criterion_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: t.add_(7.0))
    double = criterion(outputs, targets)
    torch.testing.assert_close(double["loss_bbox"], single["loss_bbox"] * 4 / 5.5)


def test_global_contrastive_and_gqa_single():
    g = torch.Generator().manual_seed(1)
    outputs, targets = _random_batch((1, 2))
    outputs["img_pooled"] = torch.randn(2, 8, generator=g)
    outputs["text_pooled"] = torch.randn(2, 8, generator=g)
    outputs["pred_answer"] = torch.randn(2, 11, generator=g)
    for target, answer in zip(targets, (3, 10)):
        target["answer"] = torch.tensor(answer)
    criterion = MDETRCriterion(
        matcher=HungarianMatcher(), contrastive_loss=True, qa_head="gqa_single", qa_loss_coef=25.0
    )
    losses = criterion(outputs, targets)  # answers collated from the targets
    sim = (
        torch.nn.functional.normalize(outputs["img_pooled"], dim=-1)
        @ torch.nn.functional.normalize(outputs["text_pooled"], dim=-1).T
        / 0.07
    )
    expected = (sim.log_softmax(1).diagonal().mean() + sim.log_softmax(0).diagonal().mean()) / -2
    torch.testing.assert_close(losses["contrastive_loss"], expected)
    torch.testing.assert_close(
        losses["loss_answer_total"],
        torch.nn.functional.cross_entropy(outputs["pred_answer"], torch.tensor([3, 10])),
    )
    assert criterion.weight_dict["contrastive_loss"] == 0.1
    assert criterion.weight_dict["loss_answer_total"] == 25.0


def test_from_config():
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.MODEL.MDETR.DEC_LAYERS = 3
    cfg.MODEL.MDETR.QA_HEAD = "clevr"
    cfg.MODEL.MDETR.QA_LOSS_COEF = 3.0
    cfg.MODEL.MDETR.PREDICT_FINAL = True
    criterion = MDETRCriterion(cfg)
    assert isinstance(criterion.matcher, HungarianMatcher)
    assert criterion.matcher.cost_bbox == 5.0
    assert (
        criterion.weight_dict["loss_answer_type"] == 3.0
        and criterion.weight_dict["loss_answer_reg"] == 1.0
    )
    assert (
        criterion.weight_dict["loss_isfinal_1"] == 1.0
        and "loss_isfinal_2" not in criterion.weight_dict
    )
    assert "loss_answer_type_0" not in criterion.weight_dict
    cfg.MODEL.MDETR.AUX_LOSS = False
    assert "loss_ce_0" not in MDETRCriterion(cfg).weight_dict


def test_isfinal_head_with_a_record_without_boxes():
    """The mapper gives a record without boxes no is-final flags; the is-final loss used to fail
    on it (KeyError 'isfinal')."""
    outputs, targets = _random_batch((2, 0))
    del targets[1]["isfinal"]
    criterion = MDETRCriterion(matcher=HungarianMatcher(), num_aux_layers=1, predict_final=True)
    losses = criterion(outputs, targets)
    assert torch.isfinite(losses["loss_isfinal"]) and torch.isfinite(losses["loss_isfinal_0"])
    del targets[0]["isfinal"]
    with pytest.raises(KeyError, match="target 0 of the batch has 2 boxes but no 'isfinal'"):
        criterion(outputs, targets)


def test_no_detection_trains_the_qa_heads_only():
    """Official --no_detection (CLEVR-Humans): no matching and no detection loss, QA losses only."""
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.MODEL.MDETR.QA_HEAD = "clevr"
    cfg.MODEL.MDETR.PREDICT_FINAL = True
    cfg.MODEL.MDETR.NO_DETECTION = True
    criterion = MDETRCriterion(cfg)
    criterion.matcher = RecordingMatcher()
    assert set(criterion.weight_dict) == {
        "loss_answer_type", "loss_answer_binary", "loss_answer_attr", "loss_answer_reg"}
    g = torch.Generator().manual_seed(0)
    outputs, targets = _random_batch((0, 0))  # questions without boxes
    for t in targets:
        del t["isfinal"]
    outputs.update(pred_answer_type=torch.randn(2, 3, generator=g),
                   pred_answer_binary=torch.randn(2, generator=g),
                   pred_answer_attr=torch.randn(2, 15, generator=g),
                   pred_answer_reg=torch.randn(2, 20, generator=g))
    answers = {"answer_type": torch.tensor([0, 2]), "answer_binary": torch.tensor([1.0, 0.0]),
               "answer_attr": torch.tensor([-100, -100]), "answer_reg": torch.tensor([-100, 3])}
    losses = criterion(outputs, targets, answers)
    assert all(k.startswith(("loss_answer_", "accuracy_answer_")) for k in losses), sorted(losses)
    assert criterion.matcher.layers() == {}
    cfg.MODEL.MDETR.QA_HEAD = "none"
    with pytest.raises(ValueError, match="NO_DETECTION leaves no loss"):
        MDETRCriterion(cfg)
