"""The embedded default: a small MDETR trained on the synthetic world. As the job does with the YAML's
``MODEL.WEIGHTS``, pass the world's pre-trained backbone as ``train.init_checkpoint``
(``datasets/synthetic/backbone_pretrained.pth``, written by tools/make_synthetic.py); without it,
everything starts from random weights.

configs/synthetic/mdetr_synthetic.yaml as a LazyConfig recipe: the nodes are derived from
the YAML recipe (``mdetr_d2.engine.lazy.lazy_recipe``), so both forms build the same model and
schedule; edit them below or with ``path.key=value`` overrides.
"""
import os

from mdetr_d2.engine.lazy import lazy_recipe

_recipe = lazy_recipe(
    os.path.join(os.path.dirname(__file__), os.pardir, "synthetic/mdetr_synthetic.yaml")
)
model = _recipe["model"]
dataloader = _recipe["dataloader"]
optimizer = _recipe["optimizer"]
lr_scheduler = _recipe["lr_scheduler"]
train = _recipe["train"]
