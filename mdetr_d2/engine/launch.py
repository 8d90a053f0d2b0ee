"""``launch`` that also runs several CPU processes on Detectron2 v0.6 (reference:
DETECTRON2_VERSIONS.md).

Detectron2 v0.6's workers assert CUDA and use NCCL; main falls back to GLOO. Without CUDA this
module starts the processes itself (``torch.multiprocessing`` spawn, GLOO) and creates Detectron2's
local process group the way the running Detectron2 version expects; otherwise it defers to
``detectron2.engine.launch``. Each CPU process gets an equal share of the cores as its torch threads
(unless ``OMP_NUM_THREADS`` says otherwise): processes that each use every core slow each other down
many times over.
"""
import logging
import os
import socket
from datetime import timedelta
from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    """A free TCP port on this machine (for single-machine runs)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def cpu_threads_per_process(num_processes: int) -> int:
    """Torch threads for each of ``num_processes`` CPU processes on this machine: an equal share of
    the cores this process may use (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // num_processes)


def init_local_process_group(num_per_machine: int, machine_rank: int) -> None:
    """Create Detectron2's per-machine process group (needed by ``comm.get_local_rank``)."""
    if hasattr(comm, "create_local_process_group"):  # Detectron2 main
        comm.create_local_process_group(num_per_machine)
        return
    num_machines = dist.get_world_size() // num_per_machine
    for i in range(num_machines):  # every rank must create every group
        ranks = list(range(i * num_per_machine, (i + 1) * num_per_machine))
        group = dist.new_group(ranks)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _cpu_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: Tuple,
    timeout: timedelta,
) -> None:
    rank = machine_rank * num_per_machine + local_rank
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cpu_threads_per_process(num_per_machine))
    dist.init_process_group(
        backend="gloo", init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
    )
    init_local_process_group(num_per_machine, machine_rank)
    comm.synchronize()
    try:
        main_func(*args)
        # No process tears its group down (rank 0: with the TCP store) while another still uses it:
        # a rank that finished first once aborted in gloo ("terminate called without an active
        # exception") while rank 0 was still evaluating. A rank that raised skips this and
        # start_processes stops the others.
        comm.synchronize()
    finally:
        dist.destroy_process_group()


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Same signature as ``detectron2.engine.launch``; ``num_gpus_per_machine`` counts CPU processes
    when CUDA is unavailable."""
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1 or torch.cuda.is_available():
        d2_launch(
            main_func, num_gpus_per_machine, num_machines, machine_rank, dist_url, args, timeout
        )
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url=auto is only for single-machine runs")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    logger.info("Launching %d CPU processes per machine (GLOO)", num_gpus_per_machine)
    mp.start_processes(
        _cpu_worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout),
        daemon=False,
        start_method="spawn",
    )
