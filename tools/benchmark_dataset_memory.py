#!/usr/bin/env python
"""Memory of the MDETR-json loader: RSS after loading N synthetic pre-training-like records and after
Detectron2's serialization (``DatasetFromList(serialize=True)``, what the train loader holds).

    python tools/benchmark_dataset_memory.py --records 100000      # extrapolates to 1.3M

The synthetic records imitate ``final_mixed_train.json``: ~100-character captions, 1-6 boxes with 1-2
spans each, several captions per image. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time

from detectron2.data.common import DatasetFromList

from mdetr_d2.data import load_mdetr_json

PRETRAIN_RECORDS = 1_300_000


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def deep_size(obj, seen=None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, (bool, int)) and -5 <= obj <= 256:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def make_json(path: str, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = "a man woman dog cat red blue shirt table left right small large holding sitting on the".split()
    images, annotations = [], []
    for i in range(n):
        caption = " ".join(rng.choice(words) for _ in range(rng.randint(10, 25))) + "."
        images.append(
            {
                "file_name": f"COCO_train2014_{i // 6:012d}.jpg",
                "height": 480,
                "width": 640,
                "id": i,
                "original_id": i // 6,
                "caption": caption,
                "data_source": "coco",
                "dataset_name": "mixed",
                "tokens_negative": [[0, 3]],
            }
        )
        for _ in range(rng.randint(1, 6)):
            b = rng.randrange(0, len(caption) - 6)
            spans = [[b, b + 5]] + ([[0, 3]] if rng.random() < 0.3 else [])
            annotations.append(
                {
                    "area": 1000.0,
                    "iscrowd": 0,
                    "image_id": i,
                    "category_id": 1,
                    "id": len(annotations),
                    "bbox": [
                        rng.uniform(0, 300),
                        rng.uniform(0, 200),
                        rng.uniform(10, 300),
                        rng.uniform(10, 200),
                    ],
                    "tokens_positive": spans,
                }
            )
    with open(path, "w") as f:
        json.dump(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "o"}]},
            f,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--make-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_json:
        make_json(args.make_json, args.records)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mixed.json")
        # Written by a child process so that its objects do not inflate this process's baseline.
        subprocess.run(
            [sys.executable, __file__, "--records", str(args.records), "--make-json", path],
            check=True,
        )
        size = os.path.getsize(path) / 2**20
        gc.collect()
        base = rss_mib()
        start = time.perf_counter()
        records = load_mdetr_json(path, {"coco": "/coco", "vg": "/vg"}, "benchmark")
        load_s = time.perf_counter() - start
        gc.collect()
        loaded = rss_mib()
        n_boxes = sum(len(r["annotations"]) for r in records)
        records_sample = records[:2000]
        pickled = sum(len(pickle.dumps(r, protocol=-1)) for r in records)  # what D2 serializes
        dataset = DatasetFromList(records, copy=False, serialize=True)
        del records
        gc.collect()
        serialized = rss_mib()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        per_list = (loaded - base) * 2**20 / args.records
        per_ser = (serialized - base) * 2**20 / args.records
        scale = PRETRAIN_RECORDS / args.records
        seen: set = set()
        deep = sum(deep_size(r, seen) for r in records_sample) / len(records_sample)
        print(
            f"records: {args.records} ({n_boxes} boxes), json {size:.1f} MiB, load_mdetr_json {load_s:.1f}s"
        )
        print(
            f"object size of one record (sys.getsizeof walk, shared strings counted once): {deep:.0f} B"
        )
        print(
            f"RSS baseline {base:.0f} MiB; list of dicts +{loaded - base:.0f} MiB ({per_list:.0f} B/record); "
            f"serialized +{serialized - base:.0f} MiB ({per_ser:.0f} B/record); peak {peak:.0f} MiB"
        )
        print(
            f"extrapolated to {PRETRAIN_RECORDS:,} records: list of dicts {(loaded - base) * scale / 1024:.2f} GiB, "
            f"serialized RSS {(serialized - base) * scale / 1024:.2f} GiB; pickled records "
            f"{pickled / args.records:.0f} B/record = {pickled * scale / 2**30:.2f} GiB (the buffer the "
            f"loader workers share)"
        )
        del dataset


if __name__ == "__main__":
    main()
