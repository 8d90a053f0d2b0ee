"""Helpers shared by the MDETR evaluators: gathering to rank 0, arrays, ranks and tables."""
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import torch
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from tabulate import tabulate

logger = logging.getLogger(__name__)


def gather_dicts_to_main(local: Mapping) -> Optional[Dict]:
    """Gather one dict per rank on rank 0 and merge them.

    Keys are datapoint ids, so the repeated samples that ``InferenceSampler``/``DistributedSampler`` padding
    produces collapse onto one entry (they carry identical values). Returns ``None`` on the other ranks.
    """
    comm.synchronize()
    parts = comm.gather(dict(local), dst=0)
    if not comm.is_main_process():
        return None
    merged: Dict = {}
    for part in parts:
        merged.update(part)
    return merged


def to_numpy(x: Any, dtype=None) -> np.ndarray:
    """Tensor / Boxes / list → numpy array on the CPU."""
    if hasattr(x, "tensor") and not isinstance(x, torch.Tensor):  # detectron2 Boxes
        x = x.tensor
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def first_hit_rank(hits: Sequence[bool]) -> int:
    """Index of the first True in a ranked hit list, or -1 when there is none."""
    idx = np.flatnonzero(np.asarray(hits, dtype=bool))
    return int(idx[0]) if len(idx) else -1


def recall_at(first_hits: Iterable[int], k: int) -> float:
    """Fraction of items whose first hit is within the top ``k`` (``k = -1``: anywhere)."""
    first_hits = list(first_hits)
    if not first_hits:
        return float("nan")
    ok = [r >= 0 and (k < 0 or r < k) for r in first_hits]
    return sum(ok) / len(ok)


def log_table(title: str, results: Mapping[str, float]) -> None:
    """Log a one-row table of metrics (Detectron2's small table)."""
    if results:
        logger.info("%s:\n%s", title, create_small_table(dict(results)))


def log_grid(title: str, rows: Mapping[str, Mapping[str, float]], row_header: str = "") -> None:
    """Log a 2-D table: one row per key of ``rows``, one column per metric."""
    if not rows:
        return
    columns: List[str] = []
    for vals in rows.values():
        for c in vals:
            if c not in columns:
                columns.append(c)
    table = [[name] + [vals.get(c, float("nan")) for c in columns] for name, vals in rows.items()]
    text = tabulate(table, headers=[row_header] + columns, tablefmt="pipe", floatfmt=".4f", numalign="left")
    logger.info("%s:\n%s", title, text)
