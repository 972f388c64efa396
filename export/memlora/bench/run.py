"""``memlora bench``: load time, TTFT, prefill and decode speed, adapter switching, peak RSS and
disk for every artifact of a bundle, always next to PyTorch eager on the same weights.

Each runner is timed in its own process (``memlora.bench_worker``) so runtimes cannot share or
leak memory into each other's peak RSS. Rows go to ``bench.json`` (fields documented in
benchmarks/README.md), a readable ``bench.md`` and PNG plots.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..backends import exportable, get_backend
from ..core.bundle import read_manifest
from ..core.config import Residency
from ..core.errors import MemloraError
from .inputs import check_inputs
from .job import BenchJob

SCHEMA = "memlora-bench/2"


@dataclass
class BenchResult:
    """What ``run_bench`` wrote: the bench.json document and the paths of the files."""

    doc: dict
    json_path: Path
    md_path: Path
    plots: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> list[dict]:
        return self.doc["rows"]

    @property
    def summary(self) -> dict:
        return self.doc["summary"]


def runnable(backend: str) -> str | None:
    """None if this backend's artifacts can be loaded and timed here, else the reason (an
    emulator's speed, such as Core ML's MIL-in-NumPy off macOS, is no figure)."""
    try:
        return get_backend(backend).runnable()
    except MemloraError as e:
        return e.message


def run_bench(target: str | Path, out_dir: str | Path, *, prompt_lens: Sequence[int] = (64, 256, 1024),
              decode_tokens: int = 128, repeats: int = 5, warmup: int = 1, threads: int | None = None,
              backends: Sequence[str] | None = None, adapters: Sequence[str] | None = None,
              adapter_modes: Sequence[str] | None = None, quants: Sequence[str] | None = None,
              switch_repeats: int = 5, resident: bool = True, bandwidth_mb: int = 512, export_parity: bool = False,
              plots: bool = True, timeout_s: float = 3600, llama_bench: str | Path | None = None,
              gguf_dir: str | Path | None = None, loop: bool = False, programs: str = "auto",
              log: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark a bundle folder, or a model folder / preset name (exported first to a temp bundle).

    Args:
        target: a bundle written by ``memlora export``, or what ``memlora export --model`` takes.
        out_dir: where bench.json, bench.md and the PNGs go.
        prompt_lens: prefill lengths; each is clipped to an artifact's ``max_seq_len - 1`` (noted per row).
        decode_tokens: greedy tokens per decode run, after a ``prompt_lens[0]`` prompt.
        repeats, warmup: timed and untimed runs per measurement; rows give median, min and max.
        threads: CPU threads for every runtime (default: all usable CPUs, set explicitly for all).
        backends, adapter_modes, quants: only these artifacts (default: all in the bundle); for a model
            target, what to export (default: every backend that runs here, external + fused x none, int8, int4).
        adapters: only these are timed (default: all); a-b-a switching takes the first two of them
            (or of the bundle's). resident: also peak RSS with every fused model resident at once.
        export_parity: check parity when exporting a model target. log: called with one line a step.
        llama_bench: a ``llama-bench`` binary (default ``$LLAMA_BENCH`` or PATH): llama.cpp peer rows on
            the same weights (:mod:`memlora.bench.llamacpp`); without one the peer is "not measured".
            gguf_dir: keep its GGUF files there (reused by the next bench of the same model), else a temp folder.
        loop: also one memory-loop turn per backend and quant, with and without prefix reuse
            (:mod:`memlora.bench.loop`).
        programs: ExecuTorch adapter programs kept loaded (:class:`~memlora.core.config.Residency`).
    """
    say = log or (lambda _msg: None)
    if prompt_lens is None or not list(prompt_lens) or min(prompt_lens) < 1 or decode_tokens < 1 or repeats < 1:
        raise MemloraError("prompt lengths, decode tokens and repeats must be positive", fix="e.g. --prompt-lens 64,256")
    programs = Residency.parse(programs).value
    out_dir = Path(out_dir)
    bundle, manifest = check_inputs(target, out_dir, backends=backends, adapters=adapters,
                                    adapter_modes=adapter_modes, quants=quants)  # before any expensive work
    if llama_bench is not None and not Path(llama_bench).is_file():
        raise MemloraError("no llama-bench binary here", llama_bench, "build llama.cpp (benchmarks/README.md) or drop --llama-bench")
    if not threads:  # explicit for every runtime, so eager and exports get the same cores
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load + threads > usable + 0.5:  # OpenMP barriers wait for descheduled threads: eager suffers most
        say(f"warning: load average {load:.1f} on {usable} CPUs with {threads} thread(s) per runner: timings will "
            "be noisy (an OpenMP runtime waits at every barrier for a thread that is not running); "
            "--threads 1 on a busy machine")
    made_out = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(target, bundle, manifest, out_dir, prompt_lens=prompt_lens, decode_tokens=decode_tokens,
                    repeats=repeats, warmup=warmup, threads=threads, backends=backends, adapters=adapters,
                    adapter_modes=adapter_modes, quants=quants, switch_repeats=switch_repeats, resident=resident,
                    bandwidth_mb=bandwidth_mb, export_parity=export_parity, plots=plots, timeout_s=timeout_s,
                    llama_bench=llama_bench, gguf_dir=gguf_dir, loop=loop, programs=programs, say=say)
    except BaseException:
        if made_out and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing half-written left behind
        raise


def _run(target, bundle, manifest, out_dir: Path, *, prompt_lens, decode_tokens, repeats, warmup, threads,
         backends, adapters, adapter_modes, quants, switch_repeats, resident, bandwidth_mb, export_parity, plots,
         timeout_s, llama_bench, gguf_dir, loop, programs, say) -> BenchResult:
    from . import env as bench_env
    from . import rows as bench_rows

    with tempfile.TemporaryDirectory(prefix="memlora-bench-") as work:
        if bundle is None:
            bundle = _export(str(target), Path(work) / "bundle", backends, adapter_modes or ("external", "fused"),
                             quants or ("none", "int8", "int4"), export_parity, say)
            manifest = read_manifest(bundle)
        settings = dict(target=str(target), bundle=str(bundle), prompt_lens=list(prompt_lens),
                        decode_tokens=decode_tokens, repeats=repeats, warmup=warmup, threads=threads,
                        switch_repeats=switch_repeats, programs=programs, **{k: list(v) if v else None for k, v in (
                            ("backends", backends), ("adapter_modes", adapter_modes), ("quants", quants))})
        say(f"memory read bandwidth ({bandwidth_mb} MiB, {threads} threads)")
        doc = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": bench_env.machine(), "versions": bench_env.versions(), "settings": settings,
               "bandwidth": bench_env.memory_bandwidth(bandwidth_mb, threads=threads), "model": manifest["model"]}
        base_job = _base_job(manifest, bundle, adapters, backends, decode_tokens=decode_tokens, repeats=repeats,
                             warmup=warmup, switch_repeats=switch_repeats, threads=threads, programs=programs)
        plans = [_plan(a, prompt_lens, decode_tokens) for a in manifest["artifacts"]
                 if all(not want or a[k] in want for k, want in
                        (("backend", backends), ("adapter_mode", adapter_modes), ("quant", quants)))]
        results = _measure(plans, base_job, bundle, resident, timeout_s, say)
        if loop:
            from .loop import measure as measure_loops

            doc["loop_turn"] = measure_loops(manifest, bundle, threads, say, timeout_s)
        say("bench pytorch eager (reference)")
        ref = _reference_job(manifest, Path(work), base_job, plans, prompt_lens)
        preset_file = Path(ref.model_dir) / "memlora_preset.json"  # written by memlora presets
        doc["model_name"] = json.loads(preset_file.read_text())["preset"] if preset_file.is_file() else None
        reference = dict(plan=ref.plan(), run=_spawn(ref, timeout_s))
        doc["machine"]["loadavg_end"] = bench_env.machine()["loadavg"]
        # Measured again at the end, the faster kept: on a shared host one reading ran 25% low
        # and left llama.cpp f32 at 137% of its roof (2026-12-06 run 2).
        doc["bandwidth"] = bench_env.faster(doc["bandwidth"], bench_env.memory_bandwidth(bandwidth_mb, threads=threads))
        config_file = Path(ref.model_dir) / "config.json"
        shape = None
        if config_file.is_file():
            from .roofline import model_shape

            shape = model_shape(json.loads(config_file.read_text()))
        doc["model"] = dict(doc["model"], shape=shape)
        doc["rows"] = bench_rows.build_rows(results, reference, manifest, doc["bandwidth"]["gbps"], shape=shape,
                                            root=bundle, llc=doc["machine"].get("last_level_cache_bytes"))
        doc["peers"], peer_rows = _peer(llama_bench, ref, Path(gguf_dir or Path(work) / "gguf"), shape,
                                        doc["bandwidth"]["gbps"], say)
        doc["rows"] += peer_rows
    doc["summary"] = bench_rows.summarize(doc["rows"])
    return _write(doc, out_dir, plots)

def _peer(llama_bench, ref: BenchJob, work: Path, shape, gbps: float, say) -> tuple[dict, list[dict]]:
    """llama.cpp on the reference's weights, at the same threads, prompts and decode position."""
    from . import llamacpp

    info, rows = llamacpp.measure(llamacpp.find_binary(llama_bench), Path(ref.model_dir), work,
                                  threads=ref.threads, prompt_lens=ref.requested_prompt_lens,
                                  decode_prompt_len=ref.decode_prompt_len, decode_tokens=ref.decode_tokens,
                                  repeats=ref.repeats, shape=shape, gbps=gbps, say=say)
    say(f"llama.cpp: {info['status']}" + (f" ({info['reason']})" if info.get("reason") else ""))
    return {"llama.cpp": info}, rows


def _base_job(manifest: dict, bundle: Path, adapters, backends, **settings) -> BenchJob:
    """What every job shares; unknown adapter or backend names fail here, naming what exists."""
    have = [a["name"] for a in manifest["adapters"]]
    names = list(adapters or have)
    unknown = [n for n in names if n not in have] + [b for b in backends or [] if b not in exportable()]
    if unknown:
        raise MemloraError(f"unknown adapter or backend {', '.join(unknown)}", bundle,
                           f"adapters here: {', '.join(have)}; backends: {', '.join(exportable())}")
    return BenchJob(adapters=names, switch_pair=(names if len(names) > 1 else have)[:2], seed=0,
                    vocab_size=manifest["model"]["vocab_size"], **settings)

def _measure(plans: list, base_job: BenchJob, bundle: Path, resident: bool, timeout_s: float, say) -> list[dict]:
    """One worker process per artifact (plus one with every fused model resident); an artifact this
    machine cannot run is listed with the reason."""
    from .rows import runner_name

    results = []
    for art, plan in plans:
        reason = runnable(art["backend"])
        if reason:
            results.append(dict(artifact=art, plan=plan, unavailable=reason))
            continue
        say(f"bench {runner_name(art)}")
        job = base_job.but(**plan, kind="artifact", root=str(bundle), artifact=art)
        results.append(dict(artifact=art, plan=plan, run=_spawn(job, timeout_s)))
        if resident and art["adapter_mode"] == "fused" and len(art["adapters"]) > 1:
            results[-1]["resident"] = _spawn(job.but(kind="resident"), timeout_s)
    return results


def _write(doc: dict, out_dir: Path, plots: bool) -> BenchResult:
    from . import report as bench_report

    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    json_path.write_text(json.dumps(doc, indent=1))
    md_path.write_text(bench_report.markdown(doc))
    pngs = bench_report.plots(doc, out_dir) if plots else []
    return BenchResult(doc, json_path, md_path, pngs)

def _plan(artifact: dict, prompt_lens: Sequence[int], decode_tokens: int) -> tuple[dict, dict]:
    """Prompt lengths and decode length for one artifact, clipped to its KV-cache capacity."""
    cap = artifact.get("max_seq_len")
    lens = [min(n, cap - 1) if cap else n for n in prompt_lens]
    dec_tokens = min(decode_tokens, cap - 2) if cap else decode_tokens
    dec_prompt = max(1, min(lens[0], cap - dec_tokens - 1)) if cap else lens[0]
    plan = dict(prompt_lens=sorted(set(lens)), decode_tokens=dec_tokens, decode_prompt_len=dec_prompt,
                requested_prompt_lens=list(prompt_lens), max_seq_len=cap)
    return artifact, plan


def _reference_job(manifest: dict, work: Path, base_job: BenchJob, plans: list, prompt_lens) -> BenchJob:
    """PyTorch eager + PEFT from the bundle's source model, at every prompt length any artifact used."""
    from ..core.families import get_family
    from ..sources.resolve import reference_sources

    model_dir, adapter_dirs = reference_sources(manifest, work / "reference")
    lens = sorted({n for _, p in plans for n in p["prompt_lens"]} | set(prompt_lens))
    return base_job.but(prompt_lens=lens, decode_prompt_len=list(prompt_lens)[0], requested_prompt_lens=list(prompt_lens),
                        max_seq_len=None, kind="pytorch", model_dir=str(model_dir),
                        adapter_dirs={n: str(p) for n, p in adapter_dirs.items()},
                        attn_implementation=get_family(manifest["model"]["family"]).attn_implementation)


def _export(model: str, out: Path, backends, modes, quants, parity: bool, say) -> Path:
    from ..core.config import AdapterMode, BackendName, Quant
    from ..export import ExportOptions, run_export

    names = list(backends) if backends else [b for b in exportable() if runnable(b) is None]
    say(f"export {model} -> {', '.join(names)} x {', '.join(modes)} x {', '.join(quants)}")
    run_export(ExportOptions(out=out, model=model, backends=[BackendName(b) for b in names],
                             adapter_modes=[AdapterMode(m) for m in modes], quants=[Quant(q) for q in quants],
                             check_parity=parity, force=True), show_progress=False)
    return out


def _spawn(job: BenchJob | dict, timeout_s: float) -> dict:
    """Run one job in a fresh interpreter (so runtimes never share memory); returns its result.

    Peak RSS comes from the child itself (``peak_rss_kb``): wait4's ``ru_maxrss`` would include
    this parent's own peak, which Linux carries into a forked child."""
    import memlora

    job = job if isinstance(job, BenchJob) else BenchJob.from_json(job)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(job.threads or 1))
    if job.artifact and job.artifact.get("backend") == "executorch":
        # XNNPACK runs on its own pool (sized to job.threads by the runner); a second OpenMP pool
        # of the same size (custom_sdpa, portable ops) only spins beside it on the same cores.
        env["OMP_NUM_THREADS"] = "1"
    pkg_root = str(Path(memlora.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "memlora.bench.worker"], stdin=subprocess.PIPE,
                                stdout=out, stderr=err, env=env)
        proc.stdin.write(json.dumps(job.to_json()).encode())
        proc.stdin.close()
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status = os.waitpid(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = errors.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        result = {"error": f"worker died (exit {proc.returncode}): {tail[0][:300]}"}
    return dict(result, wall_s=time.perf_counter() - t0, exit_code=proc.returncode)
