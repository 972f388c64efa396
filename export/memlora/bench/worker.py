"""One benchmark measurement in its own process: ``python -m memlora.bench.worker`` (used by run.py).

Reads one job as JSON on stdin, loads one runner (an exported artifact, or PyTorch eager + PEFT),
times it and writes one JSON object on stdout. Each runner gets a fresh process so one runtime's
memory (onnxruntime keeps its arenas) never shows up in another's peak RSS, which the child
reports itself (see ``peak_rss_kb``). Anything a library prints goes to stderr.

The job is a :class:`~memlora.bench.job.BenchJob`.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from memlora.bench.job import BenchJob


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM); 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kb() -> int:
    """This process's peak RSS. Linux: VmHWM, which starts fresh at exec; the parent's wait4
    ``ru_maxrss`` does not, it carries the parent's own peak from before the fork."""
    hwm = _status_kb("VmHWM")
    if hwm:
        return hwm
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss  # bytes on macOS, kB elsewhere


def stats(samples: list[float]) -> dict:
    """Median, min, max and count of timing samples."""
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples),
            "samples": [round(s, 6) for s in samples]}


def _open(job: BenchJob):
    """Build the runner for the job; returns (runner, load seconds, weight bytes or None, threads used)."""
    threads = job.threads
    from memlora.backends import get_backend
    from memlora.core.artifact import Artifact
    from memlora.core.config import Residency

    backend = get_backend(job.kind if job.kind == "pytorch" else job.artifact["backend"])
    reason = backend.available()  # imports the runtime before the clock starts
    if reason:
        raise RuntimeError(reason)
    if job.rss_runtime_kb is None:
        job.rss_runtime_kb = _status_kb("VmRSS")
    t0 = time.perf_counter()
    if job.kind == "pytorch":
        from memlora.backends.pytorch import reference_runner

        runner = reference_runner(job.model_dir, job.adapter_dirs, job.attn_implementation,
                                  threads=threads)
    else:
        runner = backend.load(Artifact.from_json(job.artifact), Path(job.root), threads=threads,
                              programs=Residency.parse(job.programs))
    return runner, time.perf_counter() - t0, getattr(runner, "weight_bytes", None), runner.threads


def _prompt(job: BenchJob, n: int) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(job.seed + n)
    return rng.integers(3, job.vocab_size, size=n).tolist()  # latency does not depend on the ids


def _time_adapter(runner, job: BenchJob) -> dict:
    """TTFT per prompt length and decode speed for the active adapter."""
    reps, warm = job.repeats, job.warmup
    out: dict = {"prefill": {}}
    for n in job.prompt_lens:
        ids, samples = _prompt(job, n), []
        for i in range(warm + reps):
            runner.reset()
            t0 = time.perf_counter()
            int(runner.prefill(ids)[-1].argmax())  # the first token is known once argmax is taken
            if i >= warm:
                samples.append(time.perf_counter() - t0)
        out["prefill"][str(n)] = stats(samples)
    ids, n_dec, samples = _prompt(job, job.decode_prompt_len), job.decode_tokens, []
    for i in range(warm + reps):
        runner.reset()
        token = int(runner.prefill(ids)[-1].argmax())
        t0 = time.perf_counter()
        for _ in range(n_dec):
            token = int(runner.decode(token).argmax())
        if i >= warm:
            samples.append(time.perf_counter() - t0)
    out["decode"] = stats(samples)
    return out


def _time_switch(runner, a: str, b: str, job: BenchJob) -> dict:
    """a-b-a switching: the ``set_adapter`` call, the first 1-token step after it (a runtime may
    bind adapter weights lazily on the next run) and, in the same round, a second step on the
    same adapter (steady). ``switch_cost`` per round is the call plus what the first step took
    beyond the steady one (never below the call: a first step faster than the steady one is noise)."""
    token = _prompt(job, 1)
    runner.set_adapter(a)
    for _ in range(job.warmup + 1):
        runner.reset()
        runner.prefill(token)
    calls, first, steady, cost = [], [], [], []
    for _ in range(job.switch_repeats):
        for name in (b, a):
            t0 = time.perf_counter()
            runner.set_adapter(name)
            t1 = time.perf_counter()
            runner.prefill(token)
            t2 = time.perf_counter()
            runner.reset()
            t3 = time.perf_counter()
            runner.prefill(token)
            t4 = time.perf_counter()
            calls.append(t1 - t0)
            first.append(t2 - t1)
            steady.append(t4 - t3)
            cost.append((t1 - t0) + max(0.0, (t2 - t1) - (t4 - t3)))
    return {"call": stats(calls), "first_step": stats(first), "steady_step": stats(steady),
            "switch_cost": stats(cost)}


def run_job(job: BenchJob) -> dict:
    """Run one job in this process and return the result document."""
    result: dict = {}
    if job.kind == "resident":  # every adapter's model resident at once (fused, no reloads)
        runners, sub = [], job.but(kind="artifact")
        for name in job.artifact["adapters"]:
            runner, _, _, _ = _open(sub)  # sub keeps the RSS measured before the first load
            runner.set_adapter(name)  # the timed job's largest prefill: the same working set
            runner.prefill(_prompt(job, max(job.prompt_lens)))
            runners.append(runner)
        result["resident_models"] = len(runners)
        job.rss_runtime_kb = sub.rss_runtime_kb
    else:
        runner, load_s, weight_bytes, threads = _open(job)
        programs = getattr(runner, "programs", None)  # ExecuTorch: the residency AUTO resolved to
        result.update(load_s=load_s, weight_bytes=weight_bytes, threads_applied=threads,
                      programs=programs.value if programs is not None else None,
                      rss_loaded_kb=_status_kb("VmRSS"), adapters={})
        for name in job.adapters:
            t0 = time.perf_counter()
            runner.set_adapter(name)
            set_s = time.perf_counter() - t0  # the call only, not the timing that follows
            result["adapters"][name] = dict(_time_adapter(runner, job), set_adapter_s=set_s)
        pair = [a for a in job.switch_pair or job.adapters[:2] if a in runner.adapters]
        if len(pair) == 2 and job.switch_repeats > 0:  # a runner without both (fused, one adapter): none
            result["switch"] = _time_switch(runner, pair[0], pair[1], job)
        runner.close()
    result.update(peak_rss_kb=peak_rss_kb(), rss_runtime_kb=job.rss_runtime_kb)
    return result


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter goes to stderr; stdout carries only the result
    job = BenchJob.from_json(json.loads(sys.stdin.read()))
    try:
        result = run_job(job)
    except Exception as e:  # reported to the parent as this measurement's error, never as a number
        msg = str(e).strip().splitlines()[0][:400] if str(e).strip() else ""
        result = {"error": f"{type(e).__name__}: {msg}"}
    out.write(json.dumps(result) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
