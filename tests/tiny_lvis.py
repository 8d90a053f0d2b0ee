"""A miniature of LVIS v1 minival in its real on-disk layout: ``lvis/lvis_v1_minival.json`` and
``coco/val2017/*.jpg`` under a datasets root (synthetic scenes as the pictures)."""
import json
from pathlib import Path

import numpy as np

from mdetr_synthetic.rendering import render_scene
from mdetr_synthetic.scenes import SHAPES, sample_scene

# Non-contiguous LVIS-style ids, names with parentheses and underscores, every frequency group.
CATEGORIES = [
    {"id": 3, "name": "circle_(shape)", "frequency": "f"},
    {"id": 7, "name": "square", "frequency": "c"},
    {"id": 12, "name": "triangle", "frequency": "r"},
    {"id": 20, "name": "star_shape", "frequency": "f"},
    {"id": 41, "name": "diamond_(gem)", "frequency": "c"},
]
CATEGORY_OF_SHAPE = {shape: c["id"] for shape, c in zip(SHAPES, CATEGORIES)}


def write_tiny_lvis(root: Path, num_images: int = 3, seed: int = 0) -> Path:
    """Write the miniature under ``root``; returns the json path."""
    rng = np.random.default_rng(seed)
    image_dir = root / "coco" / "val2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image_id = 139 + 100 * i
        scene = sample_scene(rng)
        file_name = f"{image_id:012d}.jpg"
        render_scene(scene).save(image_dir / file_name, quality=95)
        present = {CATEGORY_OF_SHAPE[o.shape] for o in scene.objects}
        absent = sorted({c["id"] for c in CATEGORIES} - present)
        images.append({"id": image_id, "width": scene.width, "height": scene.height,
                       "coco_url": f"http://images.cocodataset.org/val2017/{file_name}",
                       "flickr_url": "", "date_captured": "2013-11-14 17:02:52", "license": 1,
                       "neg_category_ids": absent[:1], "not_exhaustive_category_ids": []})
        for obj in scene.objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": CATEGORY_OF_SHAPE[obj.shape], "bbox": list(obj.bbox),
                                "area": obj.area,
                                "segmentation": [[v for p in obj.polygon for v in p]]})
    categories = []
    for c in CATEGORIES:
        count = sum(a["category_id"] == c["id"] for a in annotations)
        categories.append({**c, "synonyms": [c["name"]], "synset": f"{c['name']}.n.01",
                           "def": "a shape", "image_count": count, "instance_count": count})
    path = root / "lvis" / "lvis_v1_minival.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {"version": "v1 miniature"}, "licenses": [],
                                "images": images, "annotations": annotations,
                                "categories": categories}))
    return path
