"""Two CPU processes (gloo, started by the project's ``launch`` with a TCP store, as
``tools/train_net.py --num-gpus 2`` does without CUDA) give the same metrics as one process, with
sampler-padding duplicates."""
import json
import pickle

import numpy as np
import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm

from mdetr_d2.engine import launch
from mdetr_d2.evaluation import LVISFixedAPEvaluator, RefExpEvaluator

N = 12


def _data():
    rng = np.random.default_rng(0)
    gt, samples = {}, []
    for i in range(N):
        x, y = rng.uniform(0, 50, 2)
        gt[i] = {
            "image": {"id": i, "dataset_name": "refcoco" if i % 2 else "refcocog"},
            "annotations": [{"id": i, "image_id": i, "bbox": [x, y, 30.0, 30.0]}],
        }
        boxes = np.concatenate([rng.uniform(0, 50, (8, 2)), np.zeros((8, 2))], axis=1)
        boxes[:, 2:] = boxes[:, :2] + 30
        samples.append((i, boxes.astype(np.float32), rng.random(8).astype(np.float32)))
    return gt, samples


def _lvis_json(path):
    images = [
        {"id": i, "width": 100, "height": 100, "neg_category_ids": [2], "not_exhaustive_category_ids": []}
        for i in range(N)
    ]
    anns = [{"id": i + 1, "image_id": i, "category_id": 1, "bbox": [20, 20, 30, 30], "area": 900} for i in range(N)]
    cats = [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "c"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def _run(evaluators, samples):
    for ev in evaluators:
        ev.reset()
    for img_id, boxes, scores in samples:
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.from_numpy(boxes))
        inst.scores = torch.from_numpy(scores)
        inst.pred_classes = torch.tensor([0, 1] * 4)  # contiguous ids of categories 1 and 2
        for ev in evaluators:
            ev.process([{"image_id": img_id}], [{"instances": inst}])
    return [ev.evaluate() for ev in evaluators]


def _build(lvis_path):
    gt, samples = _data()
    return [RefExpEvaluator("dist_refexp", ground_truth=gt), LVISFixedAPEvaluator("dist_lvis", lvis_path, topk=5)], samples


def _worker(lvis_path, out_file):
    rank, world = comm.get_rank(), comm.get_world_size()
    evaluators, samples = _build(lvis_path)
    # Interleaved shards like a distributed sampler; the last sample is repeated on rank 1 (padding).
    shard = samples[rank::world] + ([samples[-1]] if rank == 1 else [])
    results = _run(evaluators, shard)
    if rank == 0:
        with open(out_file, "wb") as f:
            pickle.dump(results, f)
    else:
        assert results == [{}, {}]


def test_two_process_gloo_matches_single_process(tmp_path):
    lvis_path = tmp_path / "lvis.json"
    _lvis_json(lvis_path)
    evaluators, samples = _build(str(lvis_path))
    single = _run(evaluators, samples)
    out = tmp_path / "out.pkl"
    launch(_worker, 2, dist_url="auto", args=(str(lvis_path), str(out)))
    with open(out, "rb") as f:
        double = pickle.load(f)
    assert double == single
    assert 0 < single[0]["refexp"]["refcoco/P@10"] and single[1]["lvis_fixed_ap"]["AP"] >= 0
