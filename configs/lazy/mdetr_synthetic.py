"""The embedded default: a small MDETR trained from scratch on the synthetic world.

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
