"""Prediction heads on decoder outputs: box MLP and the question-answering heads (reference §1.12-1.16)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..structures.qa import CLEVR_ANSWER_TYPES, CLEVR_ATTRIBUTES, GQA_ANSWER_TYPES


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (``layers.{i}`` naming, as the official MLP)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# The official head sizes: answers per GQA type, all GQA answers, CLEVR counts 0..19.
GQA_HEAD_SIZES = {"obj": 3, "attr": 403, "rel": 1594, "global": 111, "cat": 678}
GQA_NUM_ANSWERS = 1853
CLEVR_NUM_COUNTS = 20


class GQAHead(nn.Module):
    """GQA split heads: answer query 0 predicts the type, queries 1..5 the answer within each type."""

    num_queries = 1 + len(GQA_ANSWER_TYPES)

    def __init__(self, dim: int):
        super().__init__()
        self.answer_type_head = nn.Linear(dim, len(GQA_ANSWER_TYPES))
        # Query order obj, rel, attr, cat, global (official order of the answer slots).
        self._query_order = ("obj", "rel", "attr", "cat", "global")
        for kind in self._query_order:
            self.add_module(f"answer_{kind}_head", nn.Linear(dim, GQA_HEAD_SIZES[kind]))

    def forward(self, answer_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        """``answer_embeds``: B×6×D from the first decoder layer."""
        out = {"pred_answer_type": self.answer_type_head(answer_embeds[:, 0])}
        for i, kind in enumerate(self._query_order, start=1):
            out[f"pred_answer_{kind}"] = getattr(self, f"answer_{kind}_head")(answer_embeds[:, i])
        return out


class GQASingleHead(nn.Module):
    """The un-split GQA variant: one answer query, one 1853-way classifier."""

    num_queries = 1

    def __init__(self, dim: int):
        super().__init__()
        self.answer_head = nn.Linear(dim, GQA_NUM_ANSWERS)

    def forward(self, answer_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred_answer": self.answer_head(answer_embeds[:, 0])}


class CLEVRHead(nn.Module):
    """CLEVR split heads: type, yes/no logit, count (20-way, through an MLP) and attribute (15-way)."""

    num_queries = 4

    def __init__(self, dim: int):
        super().__init__()
        self.answer_type_head = nn.Linear(dim, len(CLEVR_ANSWER_TYPES))
        self.answer_binary_head = nn.Linear(dim, 1)
        self.answer_reg_head = MLP(dim, dim, CLEVR_NUM_COUNTS, 3)
        self.answer_attr_head = nn.Linear(dim, len(CLEVR_ATTRIBUTES))

    def forward(self, answer_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "pred_answer_type": self.answer_type_head(answer_embeds[:, 0]),
            "pred_answer_binary": self.answer_binary_head(answer_embeds[:, 1]).squeeze(-1),
            "pred_answer_reg": self.answer_reg_head(answer_embeds[:, 2]),
            "pred_answer_attr": self.answer_attr_head(answer_embeds[:, 3]),
        }


QA_HEADS = {"gqa": GQAHead, "gqa_single": GQASingleHead, "clevr": CLEVRHead}


def build_qa_head(kind: str, dim: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind not in QA_HEADS:
        raise ValueError(f"MODEL.MDETR.QA_HEAD must be 'none' or one of {sorted(QA_HEADS)}, got {kind!r}")
    return QA_HEADS[kind](dim)
