"""What a benchmark records about where it ran: machine, versions, and the memory bandwidth roof."""
from __future__ import annotations

import os
import platform
import sys
import time
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


def memory_bandwidth(mb: int = 512, repeats: int = 5) -> dict:
    """Best-of-``repeats`` large NumPy copy; GB/s counts bytes read plus bytes written (as STREAM
    copy does). Decode of a model bigger than the caches cannot beat weights / this figure."""
    import numpy as np

    n = mb * (1 << 20) // 8
    src = np.ones(n, np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    moved = 2 * src.nbytes
    del src, dst
    return {"method": f"numpy copy of {mb} MiB, best of {repeats}, read+write bytes",
            "bytes_moved": moved, "seconds": best, "gbps": moved / best / 1e9}
