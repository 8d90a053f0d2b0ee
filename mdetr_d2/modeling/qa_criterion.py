"""Question-answering losses and accuracies of MDETR's GQA and CLEVR heads (reference §3.9).

Each question has an answer *type*; the type head is trained on every question, each per-type head
only on the questions of its type (labels of other types are −100, PyTorch's ignore index),
normalised by that type's count in the batch (1 when the type is absent, which gives a loss of 0 and
an accuracy of 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..structures.qa import ANSWER_KEY, CLEVR_ANSWER_TYPES, GQA_ANSWER_TYPES, QA_ANSWER_KEYS

__all__ = ["qa_losses", "qa_weight_dict", "collate_answers"]

# The key of each per-type head, in type-id order (reference §1.15, §3.9).
GQA_KEYS = tuple(ANSWER_KEY[t] for t in GQA_ANSWER_TYPES)
CLEVR_KEYS = tuple(ANSWER_KEY[t] for t in CLEVR_ANSWER_TYPES)


def collate_answers(targets: list[dict], qa_head: str) -> dict[str, torch.Tensor]:
    """Stack the per-image answer scalars of ``targets`` into the batched ``answers`` dict."""
    return {
        k: torch.stack([torch.as_tensor(t[k]) for t in targets]) for k in QA_ANSWER_KEYS[qa_head]
    }


def qa_weight_dict(qa_head: str, qa_loss_coef: float) -> dict[str, float]:
    """Loss weights of a QA head.

    ``qa_loss_coef`` on every GQA term, but only on the CLEVR type term (the CLEVR per-type heads
    keep weight 1, reference §3.11).
    """
    if qa_head == "gqa":
        return {f"loss_answer_{k}": qa_loss_coef for k in ("type",) + GQA_KEYS}
    if qa_head == "gqa_single":
        return {"loss_answer_total": qa_loss_coef}
    if qa_head == "clevr":
        return {"loss_answer_type": qa_loss_coef, **{f"loss_answer_{k}": 1.0 for k in CLEVR_KEYS}}
    if qa_head == "none":
        return {}
    raise ValueError(f"unknown QA head {qa_head!r}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over ``mask`` divided by the mask count (by 1 when the mask is empty)."""
    return values.masked_fill(~mask, 0).sum() / mask.sum().clamp(min=1)


def _masked_accuracy(correct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of ``correct`` over ``mask``; 1 when the mask is empty."""
    count = mask.sum()
    acc = (correct & mask).sum() / count.clamp(min=1)
    return torch.where(count > 0, acc, torch.ones_like(acc))


def _split_heads_losses(
    outputs: dict, answers: dict, type_names: tuple[str, ...], head_loss, head_correct
) -> dict[str, torch.Tensor]:
    type_logits = outputs["pred_answer_type"]
    answer_type = answers["answer_type"]
    losses = {"loss_answer_type": F.cross_entropy(type_logits, answer_type)}
    type_correct = type_logits.argmax(-1) == answer_type
    losses["accuracy_answer_type"] = type_correct.float().mean()

    head_of_true_type_correct = torch.zeros_like(type_correct)
    for type_id, name in enumerate(type_names):
        is_type = answer_type == type_id
        logits, labels = outputs[f"pred_answer_{name}"], answers[f"answer_{name}"]
        losses[f"loss_answer_{name}"] = _masked_mean(head_loss(name, logits, labels), is_type)
        correct = head_correct(name, logits, labels)
        losses[f"accuracy_answer_{name}"] = _masked_accuracy(correct, is_type)
        head_of_true_type_correct |= correct & is_type
    losses["accuracy_answer_total"] = (type_correct & head_of_true_type_correct).float().mean()
    return losses


def _ce_none(_name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def _argmax_correct(_name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1) == labels


def _clevr_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if name == "binary":  # one yes/no logit per question, target 1 = "yes"
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return F.cross_entropy(logits, labels, reduction="none")


def _clevr_correct(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if name == "binary":
        return (logits.sigmoid() > 0.5) == (labels > 0.5)
    return logits.argmax(-1) == labels


def qa_losses(outputs: dict, answers: dict, qa_head: str) -> dict[str, torch.Tensor]:
    """Losses (``loss_answer_*``) and accuracies (``accuracy_answer_*``) of one QA head.

    Args:
        outputs: the model outputs with the ``pred_answer_*`` logits of ``qa_head``.
        answers: the batched answers (``answer_type``, ``answer_<type>``; ``answer`` for
            ``gqa_single``).
        qa_head: ``"gqa"``, ``"gqa_single"`` or ``"clevr"``.
    """
    device = outputs["pred_answer_type" if qa_head != "gqa_single" else "pred_answer"].device
    answers = {k: torch.as_tensor(answers[k]).to(device) for k in QA_ANSWER_KEYS[qa_head]}
    if qa_head == "gqa":
        return _split_heads_losses(outputs, answers, GQA_KEYS, _ce_none, _argmax_correct)
    if qa_head == "clevr":
        return _split_heads_losses(outputs, answers, CLEVR_KEYS, _clevr_loss, _clevr_correct)
    if qa_head == "gqa_single":
        logits, labels = outputs["pred_answer"], answers["answer"]
        return {
            "loss_answer_total": F.cross_entropy(logits, labels),
            "accuracy_answer_total": (logits.argmax(-1) == labels).float().mean(),
        }
    raise ValueError(f"no QA losses for head {qa_head!r}")
