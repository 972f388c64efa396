"""What a benchmark records about where it ran: machine, versions, and the memory bandwidth roof."""
from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from importlib import metadata


def machine() -> dict:
    """CPU model, cores, memory and load: the context a number means nothing without."""
    cpu = platform.processor() or platform.machine()
    mem_total = None
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
        with open("/proc/meminfo") as f:
            mem_total = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    if sys.platform == "darwin":  # no /proc: ask sysctl
        import subprocess

        def sysctl(key: str) -> str:
            return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True).stdout.strip()

        cpu = sysctl("machdep.cpu.brand_string") or cpu
        mem_total = int(sysctl("hw.memsize") or 0) or None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_bytes": mem_total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "last_level_cache_bytes": last_level_cache_bytes(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    """Installed versions of every runtime a row may use; None where not installed."""
    from .. import __version__

    out: dict = {"memlora": __version__}
    for dist in ("torch", "onnxruntime", "onnx", "executorch", "coremltools", "transformers", "peft", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache (Linux sysfs); a model smaller than it has no DRAM roofline."""
    best = None
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
            n = int(text.rstrip("KMG")) * {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        except (OSError, ValueError):
            continue
        best = max(best or 0, n)
    return best


def memory_bandwidth(mb: int = 512, repeats: int = 5, threads: int = 1) -> dict:
    """Read bandwidth, the one figure every roofline of a run divides by: ``threads`` threads
    (the bench's own count) each reduce a part of an ``mb`` MiB int64 array, best of ``repeats``,
    with the fastest of two read kernels (``max`` and OR; NumPy drops the GIL in both); GB/s =
    bytes read / seconds. A roof must bound what runners reach: on one Xeon here the OR reduce
    alone read 10-13 GB/s on one thread while llama.cpp f32 decode streamed 15.4 GB/s of
    weights (a share above 100%); ``max`` read 15.8. Decode reads weights and writes almost
    nothing, so a read figure, not a copy's read + write, is its roof."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    threads = max(1, int(threads or 1))
    src = np.ones(mb * (1 << 20) // 8, np.int64)  # ones: every page written, so resident
    parts = np.array_split(src, threads)
    timed = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, kernel in (("max", np.maximum.reduce), ("OR", np.bitwise_or.reduce)):
            list(pool.map(kernel, parts))  # threads started, pages touched
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(kernel, parts))
                best = min(best, time.perf_counter() - t0)
            timed[name] = best
    kernel, best = min(timed.items(), key=lambda kv: kv[1])
    read = src.nbytes
    del src, parts
    return {"method": f"read: {threads} thread(s) each {kernel}-reduce a part of {mb} MiB int64, best of {repeats} "
                      f"(fastest of max and OR)", "threads": threads, "bytes_read": read, "seconds": best,
            "gbps": read / best / 1e9, "kernels_gbps": {k: read / v / 1e9 for k, v in timed.items()}}


def faster(first: dict, second: dict) -> dict:
    """The faster of two :func:`memory_bandwidth` readings, with both recorded (``samples_gbps``)."""
    best = dict(max((first, second), key=lambda b: b["gbps"]))
    best["samples_gbps"] = [first["gbps"], second["gbps"]]
    return best
