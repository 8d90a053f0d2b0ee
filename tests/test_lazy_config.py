"""LazyConfig recipes (configs/lazy/) against their yacs twins: the same model (parameter names,
shapes, trainable flags, buffers), optimizer groups, LR at every phase of the schedule, data
pipeline, evaluators and run settings; and the two training tools giving the same run."""
import json
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import META_ARCH_REGISTRY
from omegaconf import OmegaConf

from mdetr_d2.data import MDETRDatasetMapper
from mdetr_d2.engine import build_mdetr_lr_scheduler, build_mdetr_optimizer, resolve_epoch_schedule
from mdetr_d2.engine.lazy import load_yacs_recipe
from mdetr_d2.engine.lazy_train import resolve_lazy_schedule
from mdetr_d2.evaluation import build_mdetr_evaluators

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# lazy recipe -> its yacs twin: pre-training, RefCOCO/+/g, Flickr, PhraseCut, GQA, the synthetic
# default.
RECIPES = {
    "mdetr_pretrain_r101": "pretrain/mdetr_pretrain_r101.yaml",
    "mdetr_pretrain_eb3": "pretrain/mdetr_pretrain_eb3.yaml",
    "mdetr_pretrain_eb5": "pretrain/mdetr_pretrain_eb5.yaml",
    "mdetr_refcoco": "mdetr_refcoco.yaml",
    "mdetr_refcoco+": "mdetr_refcoco+.yaml",
    "mdetr_refcocog": "mdetr_refcocog.yaml",
    "mdetr_flickr_merged": "mdetr_flickr_merged.yaml",
    "mdetr_phrasecut_step1": "mdetr_phrasecut_step1.yaml",
    "mdetr_phrasecut_step2": "mdetr_phrasecut_step2.yaml",
    "mdetr_gqa": "mdetr_gqa.yaml",
    "mdetr_synthetic": "synthetic/mdetr_synthetic.yaml",
}


def test_every_lazy_recipe_is_checked():
    assert {p.stem for p in (CONFIGS / "lazy").glob("*.py")} == set(RECIPES)


def _both(name, text_encoder):
    # ImageNet / HF weights would need a download: names and shapes do not depend on them.
    yacs = load_yacs_recipe(str(CONFIGS / RECIPES[name]), [
        "MODEL.MDETR.TEXT_ENCODER.NAME", text_encoder, "MODEL.MDETR.BACKBONE_PRETRAINED", "False",
        "MODEL.MDETR.TEXT_ENCODER.PRETRAINED", "False"])
    lazy = LazyConfig.load(str(CONFIGS / "lazy" / f"{name}.py"))
    overrides = [f"model.text_encoder.name={text_encoder}", "model.text_encoder.pretrained=False"]
    if "pretrained" in lazy.model.backbone:
        overrides.append("model.backbone.pretrained=False")
    return yacs, LazyConfig.apply_overrides(lazy, overrides)


def _structure(model):
    return ([(n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()],
            [(n, tuple(b.shape)) for n, b in model.named_buffers()])


def _groups(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    groups = sorted((g["lr"], g["weight_decay"], g.get("mdetr_group"),
                     tuple(sorted(names[id(p)] for p in g["params"])))
                    for g in optimizer.param_groups)
    return type(optimizer).__name__, optimizer.defaults, groups


def _lrs(scheduler, iterations):
    out = []
    for k in iterations:
        scheduler.last_epoch = k
        out.append(scheduler.get_lr())
    return out


def _mapper_state(mapper):
    state = {k: v for k, v in vars(mapper).items() if k != "augmentations"}
    return state, repr(mapper.augmentations)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_lazy_recipe_builds_what_its_yacs_twin_builds(name, tiny_text_encoder):
    yacs, lazy = _both(name, tiny_text_encoder)
    # Both forms state the schedule in epochs and resolve it the same way (10,000 datapoints).
    epochs = OmegaConf.to_container(lazy.train.schedule_in_epochs)
    yacs = resolve_epoch_schedule(yacs, 10_000, 1).apply(yacs)
    assert resolve_lazy_schedule(lazy, 10_000, 1).values == resolve_epoch_schedule(
        load_yacs_recipe(str(CONFIGS / RECIPES[name])), 10_000, 1).values
    assert epochs["max_iter"] == yacs.SOLVER.EPOCHS and epochs["lr_drop"] == yacs.SOLVER.LR_DROP_EPOCHS
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        model_y = META_ARCH_REGISTRY.get(yacs.MODEL.META_ARCHITECTURE)(yacs)
        model_l = instantiate(lazy.model)
    assert type(model_l) is type(model_y)
    assert _structure(model_l) == _structure(model_y)
    assert model_l.criterion.weight_dict == model_y.criterion.weight_dict

    optimizer_y = build_mdetr_optimizer(yacs, model_y)
    lazy.optimizer.model = model_l
    optimizer_l = instantiate(lazy.optimizer)
    assert _groups(optimizer_l, model_l) == _groups(optimizer_y, model_y)

    scheduler_y = build_mdetr_lr_scheduler(yacs, optimizer_y)
    lazy.lr_scheduler.optimizer = optimizer_l
    scheduler_l = instantiate(lazy.lr_scheduler)
    s = yacs.SOLVER
    assert lazy.train.max_iter == s.MAX_ITER
    warmup = round(s.WARMUP_FRACTION * s.MAX_ITER)
    phases = {0, 1, 2, warmup - 1, warmup, warmup + 1, s.LR_DROP - 1, s.LR_DROP, s.LR_DROP + 1,
              s.MAX_ITER // 3, s.MAX_ITER - 1}
    iterations = sorted(k for k in phases if 0 <= k < s.MAX_ITER)
    assert _lrs(scheduler_l, iterations) == _lrs(scheduler_y, iterations)

    train = lazy.dataloader.train
    assert list(train.dataset.names) == list(yacs.DATASETS.TRAIN)
    assert train.dataset.filter_empty == yacs.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    assert (train.total_batch_size, train.num_workers, train.aspect_ratio_grouping) == (
        s.IMS_PER_BATCH, yacs.DATALOADER.NUM_WORKERS, yacs.DATALOADER.ASPECT_RATIO_GROUPING)
    assert (train.seed, train.max_bad_record_fraction) == (
        yacs.SEED, yacs.DATALOADER.MAX_BAD_RECORD_FRACTION)
    assert _mapper_state(instantiate(train.mapper)) == _mapper_state(MDETRDatasetMapper(yacs, True))
    assert [t.dataset.names for t in lazy.dataloader.test] == list(yacs.DATASETS.TEST)
    for test in lazy.dataloader.test:
        expected = _mapper_state(MDETRDatasetMapper(yacs, False))
        assert _mapper_state(instantiate(test.mapper)) == expected
    for name_, evaluator in zip(yacs.DATASETS.TEST, lazy.dataloader.evaluator):
        args = OmegaConf.to_container(evaluator, resolve=True)
        del args["_target_"]
        expected = build_mdetr_evaluators.from_config(
            yacs, name_, f"{yacs.OUTPUT_DIR}/inference/{name_}")
        assert args == expected

    t = lazy.train
    assert (t.output_dir, t.init_checkpoint, t.device, t.seed) == (
        yacs.OUTPUT_DIR, yacs.MODEL.WEIGHTS, yacs.MODEL.DEVICE, yacs.SEED)
    assert (t.checkpointer.period, t.eval_period) == (s.CHECKPOINT_PERIOD, yacs.TEST.EVAL_PERIOD)
    assert (t.clip_grad.max_norm, t.model_ema.enabled, t.model_ema.decay) == (
        s.CLIP_MAX_NORM, s.EMA.ENABLED, s.EMA.DECAY)
    assert (t.amp.enabled, t.amp.precision, t.weights_key) == (
        s.AMP.ENABLED, s.AMP.PRECISION, yacs.MODEL.MDETR.WEIGHTS_KEY)


def test_a_lazy_edit_reaches_the_model(tiny_text_encoder):
    _, lazy = _both("mdetr_refcoco", tiny_text_encoder)
    lazy = LazyConfig.apply_overrides(lazy, ["model.transformer.num_decoder_layers=2",
                                             "train.max_iter=100"])
    with torch.device("meta"):
        model = instantiate(lazy.model)
    assert len(model.transformer.decoder.layers) == 2
    assert lazy.lr_scheduler.max_iter == 100  # the schedule follows train.max_iter
    # The mapper tokenizes with the text encoder named once in the model node.
    assert lazy.dataloader.train.mapper.tokenizer_name == tiny_text_encoder


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory):
    from mdetr_synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("lazy_world")
    generate_synthetic_dataset(root, num_train=4, num_val=2, num_test=1, text_hidden_size=32,
                               text_layers=1, progress=False)
    return root


def test_lazy_and_yacs_tools_train_the_same_run(synthetic_world, tmp_path):
    """tools/train_net.py and tools/lazyconfig_train_net.py on the synthetic recipe: the same
    losses, the same final weights and the same evaluation, bit for bit."""
    from detectron2.engine import default_argument_parser

    from mdetr_synthetic import register_synthetic

    register_synthetic(synthetic_world)
    text_encoder = str(synthetic_world / "text_encoder")
    train_net = __import__("tools.train_net", fromlist=["main"])
    lazy_net = __import__("tools.lazyconfig_train_net", fromlist=["main"])
    yacs_out, lazy_out = tmp_path / "yacs", tmp_path / "lazy"
    train_net.main(default_argument_parser().parse_args([
        "--config-file", "configs/synthetic/mdetr_synthetic.yaml",
        "MODEL.MDETR.TEXT_ENCODER.NAME", text_encoder, "OUTPUT_DIR", str(yacs_out),
        "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "100"]))
    results_l = lazy_net.main(default_argument_parser().parse_args([
        "--config-file", "configs/lazy/mdetr_synthetic.py",
        f"model.text_encoder.name={text_encoder}", f"train.output_dir={lazy_out}",
        "train.max_iter=3", "dataloader.train.total_batch_size=2",
        "train.checkpointer.period=100"]))

    def losses(folder):
        rows = [json.loads(x) for x in (folder / "metrics.json").read_text().splitlines()]
        return [(r["iteration"], r["total_loss"], r["lr"]) for r in rows if "total_loss" in r]

    assert losses(lazy_out) and losses(lazy_out) == losses(yacs_out)
    final_y = torch.load(yacs_out / "model_final.pth", weights_only=True)
    final_l = torch.load(lazy_out / "model_final.pth", weights_only=True)
    for key in ("model", "model_ema"):
        assert final_l[key].keys() == final_y[key].keys()
        for k in final_y[key]:
            assert torch.equal(final_l[key][k], final_y[key][k]), (key, k)
    # The lazy run's end-of-training evaluation (EMA weights) = yacs --eval-only on the yacs run's
    # checkpoint = lazy --eval-only on the lazy run's checkpoint.
    assert "synthetic_refexp/P@1" in results_l["synthetic_refexp_val"]["refexp"]
    results_y = train_net.main(default_argument_parser().parse_args([
        "--config-file", "configs/synthetic/mdetr_synthetic.yaml", "--eval-only",
        "MODEL.MDETR.TEXT_ENCODER.NAME", text_encoder, "OUTPUT_DIR", str(tmp_path / "yacs_eval"),
        "MODEL.WEIGHTS", str(yacs_out / "model_final.pth")]))
    assert _same_metrics(results_l, results_y)
    again = lazy_net.main(default_argument_parser().parse_args([
        "--config-file", "configs/lazy/mdetr_synthetic.py", "--eval-only",
        f"model.text_encoder.name={text_encoder}", f"train.output_dir={tmp_path / 'lazy_eval'}",
        f"train.init_checkpoint={lazy_out / 'model_final.pth'}"]))
    assert _same_metrics(again, results_l)


def _same_metrics(a: dict, b: dict) -> bool:
    """Equal evaluation results, a NaN metric (e.g. AP of a size no box has) equal to NaN."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_lazy_recipe_resolves_its_epochs_when_training_starts(synthetic_world, tmp_path):
    """An iteration value left at -1 in a lazy recipe comes from train.schedule_in_epochs and the
    training set's length, as in tools/train_net.py."""
    from detectron2.data import DatasetCatalog
    from detectron2.engine import default_argument_parser

    from mdetr_synthetic import register_synthetic

    register_synthetic(synthetic_world)
    lazy_net = __import__("tools.lazyconfig_train_net", fromlist=["main"])
    out = tmp_path / "lazy_epochs"
    lazy_net.main(default_argument_parser().parse_args([
        "--config-file", "configs/lazy/mdetr_synthetic.py",
        f"model.text_encoder.name={synthetic_world / 'text_encoder'}", f"train.output_dir={out}",
        "train.max_iter=-1", "train.schedule_in_epochs.max_iter=1",
        "dataloader.train.total_batch_size=2", "train.checkpointer.period=100"]))
    # An epoch is every record of DATASETS.TRAIN, a dataset listed twice counted twice.
    train_names = load_yacs_recipe("configs/synthetic/mdetr_synthetic.yaml").DATASETS.TRAIN
    size = sum(len(DatasetCatalog.get(n)) for n in train_names)
    rows = [json.loads(x) for x in (out / "metrics.json").read_text().splitlines()]
    assert max(r["iteration"] for r in rows if "total_loss" in r) == size // 2 - 1
    assert (out / "model_final.pth").is_file()
