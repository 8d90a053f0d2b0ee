#!/usr/bin/env python
"""Train or evaluate MDETR from a LazyConfig recipe (configs/lazy/), Detectron2's Python configs.

    python tools/lazyconfig_train_net.py --config-file configs/lazy/mdetr_refcoco.py --num-gpus 8
    python tools/lazyconfig_train_net.py --config-file configs/lazy/mdetr_refcoco.py \\
        train.max_iter=1000 model.transformer.dropout=0.0 \\
        train.init_checkpoint=mdetr://pretrained_resnet101
    python tools/lazyconfig_train_net.py --config-file configs/lazy/mdetr_refcoco.py --eval-only \\
        train.init_checkpoint=mdetr://refcoco_resnet101

Overrides are ``path.key=value`` (``LazyConfig.apply_overrides``). ``--num-gpus N`` starts N CPU
processes when CUDA is unavailable (GLOO), as tools/train_net.py does; the synthetic example world
is registered as tools/train_net.py registers it.
"""
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_setup
from detectron2.utils import comm

from mdetr_d2.engine import default_argument_parser, launch
from mdetr_d2.engine.lazy_train import do_test, do_train
from mdetr_d2.engine.trainer import load_weights_for_evaluation
from mdetr_synthetic import default_synthetic_root, register_synthetic


def main(args):
    register_synthetic(default_synthetic_root(), keep_existing=True)  # as tools/train_net.py
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        load_weights_for_evaluation(model, cfg.train.init_checkpoint, cfg.train.output_dir,
                                    cfg.train.weights_key, resume=args.resume,
                                    skip_mismatched=cfg.train.get("skip_mismatched_weights", ()))
        results = do_test(cfg, model.eval())
        return results if comm.is_main_process() else None
    results = do_train(cfg, resume=args.resume)
    return results if comm.is_main_process() else None


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
