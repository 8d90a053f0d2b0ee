"""Job set-up for scripts like ``tools/train_net.py``: Detectron2's ``default_setup`` plus ours."""
from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser as d2_default_argument_parser
from detectron2.engine import default_setup as d2_default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

__all__ = ["check_device", "default_argument_parser", "default_setup"]


def default_argument_parser(epilog=None):
    """Detectron2's parser, with ``--dist-url`` defaulting to "auto": a free local port.

    Detectron2's default is a fixed port per user, so a second multi-process job of the same user
    on the host (or any program holding that port) makes ``--num-gpus 2`` fail with EADDRINUSE.
    Multi-machine jobs pass ``--dist-url`` as before.
    """
    parser = d2_default_argument_parser(epilog)
    parser.set_defaults(dist_url="auto")
    return parser


def check_device(cfg: CfgNode) -> None:
    """Refuse a CUDA ``MODEL.DEVICE`` on a machine without CUDA, saying what to set instead.

    Not a silent switch to the CPU: a job meant for GPUs that lands on a machine with a broken CUDA
    set-up should stop at once, not train for days on the CPU.
    """
    device = str(cfg.MODEL.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"MODEL.DEVICE is {device!r} but CUDA is not available on this machine. Add "
            "`MODEL.DEVICE cpu` to the command line to run on the CPU (`--num-gpus N` then starts "
            "N CPU processes)."
        )


def default_setup(cfg: CfgNode, args) -> None:
    """Detectron2's ``default_setup`` (its loggers, environment and config in the log, config
    backup, seeds) plus the ``mdetr_d2`` logger on the console and in ``OUTPUT_DIR/log.txt``
    (evaluator tables, dataset counts, which weights were loaded), and :func:`check_device`."""
    check_device(cfg)
    d2_default_setup(cfg, args)
    # Same arguments as Detectron2's own call: one file handler per output folder and rank.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mdetr_d2")
    logging.getLogger(__name__).info("mdetr_d2 logging to %s", cfg.OUTPUT_DIR or "the console")
