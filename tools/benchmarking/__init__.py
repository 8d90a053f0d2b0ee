"""The parts of ``tools/benchmark.py``, one job each.

* ``inputs``: the synthetic caption, images, training dicts, padded batches and LVIS names;
* ``model_setup``: the config, the optional random text encoder, BN statistics for random weights,
  one model per backbone arithmetic mode;
* ``measure``: timing, peak memory, their summary, ``--amp``'s autocast;
* ``compare``: output differences and the float64 check;
* ``official``: the adapter for the official MDETR code, the only module that edits ``sys.path``
  or patches anything at run time;
* ``runs``: the inference, export, training, class-prompt and many-captions runs;
* ``report``: the printed table.
"""
