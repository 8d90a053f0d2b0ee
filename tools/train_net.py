#!/usr/bin/env python
"""Train or evaluate MDETR with Detectron2.

    python tools/train_net.py --config-file configs/mdetr_refcoco.yaml --num-gpus 2
    python tools/train_net.py --config-file configs/mdetr_refcoco.yaml --eval-only MODEL.WEIGHTS
    ckpt.pth

``--num-gpus N`` starts N CPU processes when CUDA is unavailable (GLOO, with ``MODEL.DEVICE cpu``),
on Detectron2 v0.6 as well; ``--dist-url`` defaults to a free local port. Schedules stated in epochs
are resolved from the training sets' length when training starts; ``mdetr_d2``'s log lines go to the
console and ``OUTPUT_DIR/log.txt``. Besides the library's datasets, the synthetic example world
(``configs/synthetic/``) is registered from ``$MDETR_DATASETS/synthetic`` unless registered before.
"""
from detectron2.config import get_cfg
from detectron2.utils import comm

from mdetr_d2.config import add_mdetr_config
from mdetr_d2.engine import (
    MDETRTrainer,
    check_device,
    default_argument_parser,
    default_setup,
    launch,
)
from mdetr_synthetic import default_synthetic_root, register_synthetic


def build_cfg(args):
    cfg = get_cfg()
    add_mdetr_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def setup(args):
    cfg = build_cfg(args)
    default_setup(cfg, args)
    return cfg


def main(args):
    # The example world's datasets, as Detectron2 projects' train_net scripts register their own
    # (here: in every launched process); a registration made before, for another folder, stays.
    register_synthetic(default_synthetic_root(), keep_existing=True)
    cfg = setup(args)
    if args.eval_only:
        model = MDETRTrainer.build_model(cfg)
        MDETRTrainer.load_for_evaluation(cfg, model, resume=args.resume)
        results = MDETRTrainer.test(cfg, model)
        if comm.is_main_process():
            return results
        return None
    trainer = MDETRTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    # Before starting processes: one clear message instead of one traceback per process.
    check_device(build_cfg(args))
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
