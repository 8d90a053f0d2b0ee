"""tools/benchmark.py runs end to end on a tiny model and writes its json (no timing assertions)."""
import json
import os
from pathlib import Path

import pytest
from benchmarking.model_setup import synthetic_text_encoder  # tools/benchmarking/

_benchmark = __import__("tools.benchmark", fromlist=["main"])
# Optional: a checkout of the official MDETR code (never part of this repository).
_OFFICIAL_CODE = Path(os.environ.get("MDETR_OFFICIAL_CODE", "/nonexistent"))


def _tiny_opts(text_encoder):
    return ["--text-encoder", text_encoder, "--device", "cpu", "--short-side", "64", "--long-side", "96",
            "--batch-sizes", "1", "2", "--train-batch-sizes", "2", "--iters", "1", "--train-iters", "1",
            "--warmup", "0", "--captions", "3", "--class-prompts", "6",
            "--opts", "MODEL.RESNETS.DEPTH", "18", "MODEL.MDETR.HIDDEN_DIM", "64", "MODEL.MDETR.NHEADS", "4",
            "MODEL.MDETR.ENC_LAYERS", "1", "MODEL.MDETR.DEC_LAYERS", "2", "MODEL.MDETR.DIM_FEEDFORWARD", "64",
            "MODEL.MDETR.NUM_QUERIES", "5", "MODEL.MDETR.CONTRASTIVE_HDIM", "16"]


def test_benchmark_writes_every_field(tmp_path):
    out = tmp_path / "bench.json"
    text_encoder = synthetic_text_encoder(tmp_path, "tiny")
    # --opts takes the rest of the command line: the other flags come first.
    assert _benchmark.main(["--output", str(out)] + _tiny_opts(text_encoder)) == 0
    r = json.loads(out.read_text())
    assert {"device", "threads", "model", "options", "inference", "training", "captions", "table"} <= set(r)
    assert [row["batch"] for row in r["inference"]] == [1, 2]
    assert r["options"]["modes"] == ["exact", "fast"]  # both backbone arithmetic modes by default
    for row in r["inference"]:
        assert row["input"] == [64, 96]
        for mode in ("exact", "fast"):
            assert {"latency_ms_median", "throughput", "peak_mb"} <= set(row["ours"][mode])
    assert {"iters_per_s", "peak_mb"} <= set(r["training"][0]["ours"]["fast"])
    assert r["captions"]["captions"] == 3 and r["captions"]["speedup"] > 0
    assert r["captions"]["max_abs_box_diff_px"] < 1e-2  # batched captions == naive loop
    prompts = r["class_prompts"]
    assert prompts["names"] == 6 and prompts["captions"] == {"per_class": 6, "joined": 1}
    assert prompts["mode"] == "exact" and prompts["joined_speedup_over_per_class"] > 0
    assert "6 LVIS names on 1 64x96 image (exact mode): per_class" in r["table"]
    assert "| inference" in r["table"]


def test_official_shims_and_key_mapping(tmp_path, official_fixtures):
    """Against the official code ($MDETR_OFFICIAL_CODE, when set): same weights, same outputs."""
    if not (_OFFICIAL_CODE / "models" / "mdetr.py").is_file():
        pytest.skip(f"no official MDETR checkout at {_OFFICIAL_CODE}")
    out = tmp_path / "bench.json"
    rc = _benchmark.main([
        "--official-checkpoint", str(official_fixtures / "det_r18" / "checkpoint.pth"),
        "--text-encoder", str(official_fixtures / "tiny_roberta"), "--official", str(_OFFICIAL_CODE),
        "--device", "cpu", "--short-side", "96", "--long-side", "128", "--batch-sizes", "2",
        "--train-batch-sizes", "2", "--iters", "1", "--train-iters", "1", "--warmup", "0", "--fp64-check",
        "--class-prompts", "40", "--output", str(out),
    ])
    r = json.loads(out.read_text())
    row = r["inference"][0]
    assert rc == 0 and row["outputs_agree"]["exact"]
    # The exact mode computes the official backbone arithmetic: same features, bit for bit.
    assert row["max_abs_diff"]["exact"]["res5"] == 0.0
    # In float64 only the order of operations differs: the same function to ~1e-12, in both modes.
    for mode in ("exact", "fast"):
        assert max(row["fp64"]["same_function"][mode].values()) < 1e-9
    assert set(row["fp64"]["fp32_vs_fp64"]) == {"exact", "fast", "official"}
    assert set(row["speedup"]) == {"exact", "fast"} and set(r["training"][0]["speedup"]) == {"exact", "fast"}
    # per_class class prompts (exact mode) = the official LVIS evaluation's loop: same labels,
    # same scores.
    prompts = r["class_prompts"]
    assert prompts["mode"] == "exact" and prompts["labels_equal"]
    assert prompts["max_abs_diff"]["scores"] < 1e-4 and prompts["max_abs_diff"]["boxes_px"] < 1e-2
    assert prompts["outputs_agree"] and prompts["per_class_speedup"] > 0


def test_benchmark_export_rows(tmp_path):
    """--export: eager vs TorchScript vs onnxruntime rows, both backbone modes, same inputs."""
    out = tmp_path / "bench.json"
    text_encoder = synthetic_text_encoder(tmp_path, "tiny")
    tiny = _tiny_opts(text_encoder)
    model_opts = tiny[tiny.index("--opts"):]
    assert _benchmark.main([
        "--output", str(out), "--text-encoder", text_encoder, "--device", "cpu",
        "--short-side", "64", "--long-side", "96", "--batch-sizes", "--train-batch-sizes",
        "--export", "torchscript", "onnx", "--export-batch-sizes", "1", "2", "--iters", "1",
        "--warmup", "0", "--cache-dir", str(tmp_path / "cache"), *model_opts,
    ]) == 0
    r = json.loads(out.read_text())
    assert r["inference"] == [] and r["training"] == []
    rows = {(row["mode"], row["batch"]): row for row in r["export"]}
    assert set(rows) == {(m, b) for m in ("exact", "fast") for b in (1, 2)}
    for row in rows.values():
        assert {"eager", "torchscript", "onnxruntime"} <= set(row)
        assert row["onnxruntime"]["throughput"] > 0
        assert row["max_abs_diff"]["torchscript"]["pred_logits"] == 0.0
        assert row["max_abs_diff"]["onnxruntime"]["pred_logits"] <= 1e-4
        assert row["max_abs_diff"]["onnxruntime"]["pred_boxes"] <= 1e-5
    assert "export (fast mode), batch 2, 64x96: eager" in r["table"]
    load = r["load_average"]
    assert load["start"] >= 0 and load["end"] >= 0 and load["cpus"] >= 1
    said = f"load average (1 min, start / end): {load['start']:.2f} / {load['end']:.2f}"
    assert said in r["table"]
