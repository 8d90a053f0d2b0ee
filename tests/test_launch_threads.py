"""CPU processes started by the project's launch (``tools/train_net.py --num-gpus N`` without CUDA)
each take an equal share of the cores as torch threads, unless OMP_NUM_THREADS says otherwise."""
import os
from pathlib import Path

import pytest
import torch

from mdetr_d2.engine import launch


def _record_threads(out_dir: str) -> None:
    rank = torch.distributed.get_rank()
    Path(out_dir, f"threads_{rank}").write_text(str(torch.get_num_threads()))


@pytest.mark.parametrize("omp", [None, "1"])
def test_each_process_takes_an_equal_share_of_the_cores(tmp_path, monkeypatch, omp):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        expected = max(1, len(os.sched_getaffinity(0)) // 2)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
        expected = 1
    launch(_record_threads, 2, dist_url="auto", args=(str(tmp_path),))
    assert [int((tmp_path / f"threads_{r}").read_text()) for r in range(2)] == [expected] * 2
