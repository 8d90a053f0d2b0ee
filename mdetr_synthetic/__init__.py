"""The synthetic grounding world: coloured shapes on a plain background, captions in MDETR's format.

An example world beside the library (it imports ``mdetr_d2``; ``mdetr_d2`` never imports it), so
that the whole pipeline (data, training, evaluation, demo) runs on a CPU in minutes with no
download. Everything is deterministic from a seed: the same call writes byte-identical files.

One module per job:

* :mod:`.scenes`: sampling a scene (objects with shape, colour, size and polygon) from a seed;
* :mod:`.rendering`: drawing a scene into an image;
* :mod:`.language`: descriptions, referring expressions, phrase captions and questions about a
  scene, with the spans naming each object, and the QA answer vocabularies;
* :mod:`.writers`: the dataset on disk (images, MDETR json of each family, the COCO detection
  view, the Flickr30k Entities layout, the cache manifest);
* :mod:`.text_encoder`: a local byte-level BPE tokenizer and random-init RoBERTa standing in for
  roberta-base;
* :mod:`.registration`: the datasets in Detectron2's catalogs, registered explicitly by whoever
  uses them (never at import);
* :mod:`.recipes`: miniatures of every recipe's data in its real layout (the recipe matrix).
"""
from .recipes import write_recipe_datasets
from .registration import default_synthetic_root, register_synthetic
from .text_encoder import build_text_encoder_folder
from .writers import generate_synthetic_dataset

__all__ = [
    "build_text_encoder_folder",
    "default_synthetic_root",
    "generate_synthetic_dataset",
    "register_synthetic",
    "write_recipe_datasets",
]
