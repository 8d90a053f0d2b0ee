"""Distributed class-prompt evaluation on two CPU processes (gloo, started by the project's
``launch`` as ``tools/train_net.py --num-gpus 2`` does without CUDA): images split across
processes, the class prompts encoded once per process, the same metrics as one process."""
import pickle
from pathlib import Path

import torch
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils import comm

from mdetr_d2.data.datasets.mdetr_json import load_lvis_v1_json, register_mdetr_dataset
from mdetr_d2.engine import MDETRTrainer, launch
from mdetr_d2.evaluation import build_mdetr_evaluators

from .conftest import tiny_mdetr_cfg
from .tiny_lvis import write_tiny_lvis

NAME = "test_dist_class_prompts"


class _Seen(DatasetEvaluator):
    def reset(self):
        self.image_ids = []

    def process(self, inputs, outputs):
        self.image_ids += [x["image_id"] for x in inputs]

    def evaluate(self):
        return {}


def _evaluate(text_encoder: str, root: str):
    """Evaluate a tiny model on the LVIS miniature at ``root``; returns the metrics (rank 0), the
    caption counts of every text encoding and the images this process ran."""
    json_file = f"{root}/lvis/lvis_v1_minival.json"
    register_mdetr_dataset(NAME, load_lvis_v1_json, json_file, f"{root}/coco",
                           evaluator_type="lvis", lvis_json=json_file)
    cfg = tiny_mdetr_cfg(text_encoder, **{"DATASETS.TEST": (NAME,), "TEST.MDETR_EVAL.LVIS_TOPK": 6,
                                          "MODEL.MDETR.CLASS_PROMPTS.CHUNK_SIZE": 2,
                                          "DATALOADER.NUM_WORKERS": 0})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    encoded = []
    encode_text = model.encode_text
    model.encode_text = lambda captions: encoded.append(len(captions)) or encode_text(captions)
    seen = _Seen()
    evaluator = DatasetEvaluators([build_mdetr_evaluators(cfg, NAME), seen])
    results = inference_on_dataset(model, MDETRTrainer.build_test_loader(cfg, NAME), evaluator)
    return results, encoded, seen.image_ids


def _record(text_encoder: str, root: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    result = _evaluate(text_encoder, root)
    with open(Path(out_dir) / f"rank{comm.get_rank()}.pkl", "wb") as f:
        pickle.dump(result, f)


def test_two_processes_split_images_and_encode_prompts_once_each(tiny_text_encoder, tmp_path):
    root = tmp_path / "datasets"
    write_tiny_lvis(root, num_images=4)
    single, encoded, image_ids = _evaluate(tiny_text_encoder, str(root))
    # 5 classes in chunks of 2, encoded once for the 4 images.
    assert encoded == [2, 2, 1] and len(image_ids) == 4
    launch(_record, 2, dist_url="auto", args=(tiny_text_encoder, str(root), str(tmp_path)))
    ranks = [pickle.loads((tmp_path / f"rank{r}.pkl").read_bytes()) for r in range(2)]
    assert [e for _, e, _ in ranks] == [[2, 2, 1], [2, 2, 1]]  # once per process
    assert sorted(i for _, _, ids in ranks for i in ids) == sorted(image_ids)
    assert all(len(ids) == 2 for _, _, ids in ranks)
    assert ranks[0][0] == single and ranks[1][0] == {}  # metrics on rank 0, as one process
