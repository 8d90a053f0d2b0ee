"""The question-answering schema: answer types, the answer targets and the answer vocabularies
(reference §1.15, §3.9, §5.6, §5.7).

One naming: an answer type has a *name* (what predictions, datasets and metrics call it) and its
head has a *key*, the official suffix of ``answer_<key>`` targets, ``pred_answer_<key>`` logits and
``loss_answer_<key>`` losses (kept: checkpoints and logs use them). GQA's keys are its type names;
CLEVR's ``attribute`` and ``number`` heads are ``attr`` and ``reg``.
"""
from __future__ import annotations

import json

import torch
from detectron2.utils.file_io import PathManager

__all__ = [
    "ANSWER_KEY",
    "CLEVR_ANSWER_TYPES",
    "CLEVR_ATTRIBUTES",
    "GQA_ANSWER_TYPES",
    "IGNORE_INDEX",
    "QA_ANSWER_KEYS",
    "answer_family",
    "clevr_answer_type",
    "encode_clevr_answer",
    "encode_gqa_answer",
    "load_qa_vocab",
    "read_answer2id",
]

# PyTorch's cross-entropy default: "no target of this type".
IGNORE_INDEX = -100

# Answer types in the order of each type classifier (GQA: also of the answer queries 1..5).
GQA_ANSWER_TYPES = ("obj", "attr", "rel", "global", "cat")
CLEVR_ANSWER_TYPES = ("binary", "attribute", "number")
# The official key of each answer type's head (see the module docstring).
ANSWER_KEY = {**{t: t for t in GQA_ANSWER_TYPES}, "binary": "binary", "attribute": "attr",
              "number": "reg"}
# The 15 CLEVR attribute answers in class-id order.
CLEVR_ATTRIBUTES = ("small", "large", "gray", "red", "blue", "green", "brown", "purple", "cyan",
                    "yellow", "cube", "sphere", "cylinder", "rubber", "metal")

# The entries of the batched ``answers`` dict each QA head (MODEL.MDETR.QA_HEAD) is trained on.
QA_ANSWER_KEYS = {
    "none": (),
    "gqa": ("answer_type",) + tuple(f"answer_{ANSWER_KEY[t]}" for t in GQA_ANSWER_TYPES),
    "gqa_single": ("answer",),
    "clevr": ("answer_type",) + tuple(f"answer_{ANSWER_KEY[t]}" for t in CLEVR_ANSWER_TYPES),
}


def answer_family(qa_head: str) -> str | None:
    """The answers a QA head (MODEL.MDETR.QA_HEAD) is trained on: ``"gqa"`` (both GQA heads),
    ``"clevr"``, or None (no QA head)."""
    if qa_head in ("", "none"):
        return None
    return "clevr" if qa_head.startswith("clevr") else "gqa"


def clevr_answer_type(answer: str) -> str:
    """CLEVR answer type of an answer: ``binary`` (yes/no), ``attribute`` or ``number``."""
    if answer in ("yes", "no"):
        return "binary"
    return "attribute" if answer in CLEVR_ATTRIBUTES else "number"


def encode_clevr_answer(answer: str) -> dict[str, torch.Tensor]:
    """CLEVR QA targets: ``answer_type`` (index into :data:`CLEVR_ANSWER_TYPES`) and
    ``answer_binary`` (float, 1 = yes), ``answer_attr``, ``answer_reg`` (-100 when unused).

    Raises:
        ValueError: the answer is neither yes/no, an attribute nor a number.
    """
    answer = str(answer).strip().lower()
    answer_type = clevr_answer_type(answer)
    binary, attr, reg = 0.0, IGNORE_INDEX, IGNORE_INDEX
    if answer_type == "binary":
        binary = float(answer == "yes")
    elif answer_type == "attribute":
        attr = CLEVR_ATTRIBUTES.index(answer)
    else:
        try:
            reg = int(answer)
        except ValueError:
            raise ValueError(
                f"CLEVR answer {answer!r} is neither yes/no, an attribute nor a number"
            ) from None
    return {
        "answer_type": torch.tensor(CLEVR_ANSWER_TYPES.index(answer_type), dtype=torch.int64),
        "answer_binary": torch.tensor(binary, dtype=torch.float32),
        "answer_attr": torch.tensor(attr, dtype=torch.int64),
        "answer_reg": torch.tensor(reg, dtype=torch.int64),
    }


def encode_gqa_answer(
    answer: str, question_type: str, answer2id: dict | None, answer2id_by_type: dict | None
) -> dict[str, torch.Tensor]:
    """GQA QA targets: ``answer`` (global vocab), ``answer_type`` and per-type ``answer_{type}``.

    Out-of-vocabulary answers map to "unknown"; the per-type target is -100 unless the question is of
    that type (reference §5.6, §9.2.24).
    """
    out = {}
    if answer2id is not None:
        out["answer"] = torch.tensor(answer2id.get(answer, answer2id["unknown"]), dtype=torch.int64)
    if answer2id_by_type is not None:
        if question_type not in GQA_ANSWER_TYPES:
            raise ValueError(f"GQA question_type {question_type!r} not in {GQA_ANSWER_TYPES}")
        out["answer_type"] = torch.tensor(GQA_ANSWER_TYPES.index(question_type), dtype=torch.int64)
        for t in GQA_ANSWER_TYPES:
            value = IGNORE_INDEX
            if t == question_type:
                vocab = answer2id_by_type[f"answer_{t}"]
                value = vocab.get(answer, vocab["unknown"])
            out[f"answer_{ANSWER_KEY[t]}"] = torch.tensor(value, dtype=torch.int64)
    return out


def read_answer2id(path: str) -> dict:
    """A GQA answer vocabulary json: ``gqa_answer2id.json`` (``{answer: id}``) or
    ``gqa_answer2id_by_type.json`` (``{"answer_<type>": {answer: id}}``)."""
    with PathManager.open(path) as f:
        return json.load(f)


def load_qa_vocab(path: str, qa_head: str) -> dict[str, dict[int, str]]:
    """The answer of every id of a GQA vocabulary json, as ``{answer type or "all": {id: answer}}``
    (``"all"``: the single vocabulary of the ``gqa_single`` head)."""
    raw = read_answer2id(path)
    if qa_head == "gqa_single":
        raw = {"all": raw}
    return {key.removeprefix("answer_"): {int(idx): answer for answer, idx in answer2id.items()}
            for key, answer2id in raw.items()}
