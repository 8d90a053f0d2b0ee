"""Timing and memory: wall-clock seconds of repeated calls (alone or interleaved), peak memory of a
call, their summary, and the autocast context of ``--amp``."""
from __future__ import annotations

import contextlib
import resource
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of a code block: CUDA max allocated, or the CPU resident-set high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = float("nan")
        self.start_mb = float("nan")

    @staticmethod
    def _status_mb(field: str) -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.start_mb = self._status_mb("VmRSS") or float("nan")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = self._status_mb("VmHWM")
            # ru_maxrss (KiB on Linux) cannot be reset: a fallback for systems without /proc.
            self.peak_mb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return False


def timed(fn, iters: int, warmup: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def timed_interleaved(fns: dict, iters: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Like :func:`timed` for several functions, alternating them call by call, so that a load change on a
    shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def peak_memory(fn, device: torch.device) -> float:
    """Peak memory (MB) of one call of ``fn``."""
    with PeakMemory(device) as mem:
        fn()
        _sync(device)
    return mem.peak_mb


def summary(times: list[float], items: int) -> dict:
    """Latency (median, min, mean, in ms) and throughput (``items`` per second at the median)."""
    med = statistics.median(times)
    return {"latency_ms_median": 1e3 * med, "latency_ms_min": 1e3 * min(times),
            "latency_ms_mean": 1e3 * statistics.fmean(times), "throughput": items / med, "iters": len(times)}


def amp_autocast(args, device):
    """The autocast context of ``--amp`` (none: a null context)."""
    if args.amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if args.amp == "bf16" else torch.float16)
