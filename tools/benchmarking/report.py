"""The printed table of a benchmark's results."""
from __future__ import annotations


def _diff_note(diffs: dict) -> str:
    """logits / boxes / res5 of one comparison."""
    return " / ".join(f"{diffs[k]:.1e}" if k in diffs else "-" for k in ("pred_logits", "pred_boxes", "res5"))


def format_table(results: dict) -> str:
    """The printed summary: a markdown table of the inference and training rows, then a line per
    float64 check, class-prompt, export and many-captions result."""
    modes = results["options"]["modes"]
    head = ["phase", "batch", "input", *(f"ours {m}" for m in modes), "official",
            *(f"{m}/official" for m in modes), *(f"max |{m} - official| logits / boxes / res5" for m in modes)]
    load = results.get("load_average")
    lines = [f"device: {results['device']}  threads: {results['threads']}  amp: {results['options']['amp']}  "
             f"compile: {results['options']['compile']}"
             + (f"  load average (1 min, start / end): {load['start']:.2f} / {load['end']:.2f} on "
                f"{load['cpus']} CPUs" if load else ""),
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(phase, r, size, fmt):
        off = r.get("official")
        cells = [phase, str(r["batch"]), size, *(fmt(r["ours"][m]) for m in modes), fmt(off) if off else "-"]
        cells += [f"{r['speedup'][m]:.2f}x" if off else "-" for m in modes]
        cells += [_diff_note(r["max_abs_diff"][m]) if "max_abs_diff" in r else "-" for m in modes]
        lines.append("| " + " | ".join(cells) + " |")

    for r in results["inference"]:
        row("inference (img/s, ms)", r, f"{r['input'][0]}x{r['input'][1]}",
            lambda e: f"{e['throughput']:.3f} ({e['latency_ms_median']:.0f} ms)")
    for r in results["training"]:
        row("training (it/s, peak MB)", r, results["train_input"],
            lambda e: f"{e['iters_per_s']:.3f} ({e['peak_mb']:.0f})")
    for r in results["inference"]:
        if "fp64" in r:
            dist = r["fp64"]["fp32_vs_fp64"]
            lines.append(f"fp64, batch {r['batch']}: max |fp32 - fp64| logits / boxes / res5: "
                         + "; ".join(f"{name} {_diff_note(d)}" for name, d in dist.items())
                         + "; same function (ours fp64 vs official fp64): "
                         + "; ".join(f"{m} {max(d.values()):.1e}" for m, d in r["fp64"]["same_function"].items()))
    p = results.get("class_prompts")
    if p:
        line = (f"{p['names']} LVIS names on 1 {p['input'][0]}x{p['input'][1]} image ({p['mode']} mode): "
                f"per_class {p['per_class']['latency_ms_median'] / 1e3:.2f} s ({p['captions']['per_class']} "
                f"captions), joined {p['joined']['latency_ms_median'] / 1e3:.2f} s ({p['captions']['joined']} "
                f"prompts)")
        if p.get("official"):
            d = p["max_abs_diff"]
            line += (f"; official loop {p['official']['latency_ms_median'] / 1e3:.2f} s: per_class "
                     f"{p['per_class_speedup']:.2f}x, joined {p['joined_speedup']:.2f}x; per_class vs official: "
                     f"labels {'equal' if p['labels_equal'] else 'DIFFER'}, scores {d['scores']:.1e}, "
                     f"boxes {d['boxes_px']:.1e} px")
        lines.append(line)
    for r in results.get("export") or []:
        runtimes = [k for k in ("eager", "torchscript", "onnxruntime") if k in r]
        diffs = "; ".join(f"{name} " + ", ".join(f"{k.removeprefix('pred_')} {v:.1e}"
                                                  for k, v in d.items())
                          for name, d in r["max_abs_diff"].items())
        size = f"{r['input'][0]}x{r['input'][1]}"
        lines.append(f"export ({r['mode']} mode), batch {r['batch']}, {size}: "
                     + ", ".join(f"{name} {r[name]['throughput']:.3f} img/s" for name in runtimes)
                     + f"; max |exported - eager|: {diffs}")
    c = results.get("captions")
    if c:
        lines.append(f"{c['captions']} captions on 1 image: predict_captions {c['batched']['latency_ms_median'] / 1e3:.2f} s, "
                     f"naive loop {c['naive_loop']['latency_ms_median'] / 1e3:.2f} s ({c['speedup']:.2f}x), "
                     f"max box diff {c['max_abs_box_diff_px']:.1e} px")
    return "\n".join(lines)
