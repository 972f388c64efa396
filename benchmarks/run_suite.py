"""The standard benchmark matrix: the default tiny preset (fast), then real-size shapes.

    python benchmarks/run_suite.py                      # tiny-qwen2 only, about a minute
    python benchmarks/run_suite.py --real               # + qwen2.5-0.5b-shape (+ llama3.2-1b-shape)
    python benchmarks/run_suite.py --real --presets qwen2.5-0.5b-shape --out /tmp/suite

Each preset is exported once (ONNX, plus ExecuTorch where it runs here; external and fused;
none, int8, int4) into ``--work`` (default /tmp, never the repo: artifacts are not committed),
then ``memlora.bench.run.run_bench`` writes bench.json, bench.md and the PNGs to ``--out/<preset>``.
Real sizes: external with all three adapters, fused (none, int4) for the timed adapter only,
exported apart and merged into one bundle (symlinks), so a run fits a shared 2-core machine.
A preset that will not fit in this machine's free memory is skipped with the reason written to
``suite.json``. Real-size shapes are published configs with random weights: speed and memory
do not depend on the weight values.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

from memlora.bench import rounds as rounds_mod  # noqa: E402
from memlora.bench.roofline import model_shape, weights_bytes  # noqa: E402
from memlora.bench.run import run_bench, runnable  # noqa: E402
from memlora.core.config import AdapterMode, BackendName, Quant  # noqa: E402
from memlora.export import ExportOptions, run_export  # noqa: E402
from memlora.sources.presets import get_preset, write_preset  # noqa: E402

TINY = "tiny-qwen2"
REAL = ("qwen2.5-0.5b-shape", "llama3.2-1b-shape", "gemma2-2b-shape")
# Settings per kind. Real sizes time one adapter (switching still uses two) and export fused
# int8 not at all, to fit a shared 2-core machine; one thread each, because on an oversubscribed
# machine two OpenMP threads made eager decode 5-10x slower (barrier waits), not faster.
SETTINGS = {
    "tiny": dict(prompt_lens=(64, 256, 1024), decode_tokens=128, repeats=5, warmup=1, adapters=None, threads=1),
    "real": dict(prompt_lens=(64, 256, 1024), decode_tokens=128, repeats=2, warmup=1, adapters=("extract",),
                 threads=1),
}
REAL_QUANTS = {AdapterMode.EXTERNAL: [Quant.NONE, Quant.INT8, Quant.INT4], AdapterMode.FUSED: [Quant.NONE, Quant.INT4]}
# Peak memory of an fp32 export relative to the fp32 weights (torch model + exporter copy +
# serialized graph + quantizer copy), measured roughly on qwen2.5-0.5b-shape here.
EXPORT_MEMORY_FACTOR = 4.0


def param_count(preset: str) -> int:
    """Parameters of a preset's config, without building the model (tied embeddings counted once):
    the roofline's fp32 weight count, in parameters."""
    return weights_bytes(model_shape(get_preset(preset).config)) // 4


def free_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith("MemAvailable")).split()[1]) * 1024
    except (OSError, StopIteration):
        return None


def fits(preset: str) -> str | None:
    """None if exporting the preset should fit in free memory, else why it is skipped."""
    need = param_count(preset) * 4 * EXPORT_MEMORY_FACTOR
    free = free_memory()
    if free is not None and need > free:
        return (f"needs about {need / 2**30:.0f} GiB to export ({param_count(preset) / 1e9:.2f}B params fp32 x "
                f"{EXPORT_MEMORY_FACTOR:g}), {free / 2**30:.0f} GiB free")
    return None


def merge_bundles(out: Path, parts: list[Path]) -> Path:
    """One bundle whose artifacts are those of ``parts`` (same source model): files are symlinked,
    the manifest lists every artifact, the first part's model block and source are kept.

    Bundle-level files (tokenizer, prompts, ``conformance.json``) come from the first part, which
    must name every adapter of the later ones: a fused part exported for the timed adapter only
    has greedy vectors for that adapter alone, a subset of the first part's. Artifact files that
    differ under one path are refused (the merged bundle would run the wrong one)."""
    from memlora.core.bundle import read_manifest, write_manifest

    out.mkdir(parents=True, exist_ok=True)
    manifests = [read_manifest(p) for p in parts]
    merged = {k: v for k, v in manifests[0].items() if k not in ("files", "artifacts")}
    merged["artifacts"] = [a for m in manifests for a in m["artifacts"]]
    merged["merged_from"] = [str(p) for p in parts]
    first_adapters = {a["name"] for a in manifests[0]["adapters"]}
    first: dict[str, tuple[str | None, Path]] = {}  # path -> (sha256, the part that brought it)
    for part, m in zip(parts, manifests):
        owned = {rel for a in m["artifacts"] for rel in a["files"].values()}
        covered = {a["name"] for a in m["adapters"]} <= first_adapters  # the first part vouches for its bundle files
        for row in m["files"]:
            link, target = out / row["path"], (part / row["path"]).resolve()
            link.parent.mkdir(parents=True, exist_ok=True)
            sha, source = first.get(row["path"], (None, out))  # (None, out): a link left by an earlier merge
            first.setdefault(row["path"], (row.get("sha256"), part))
            if not link.exists():
                link.symlink_to(target)
            elif link.resolve() == target or row.get("sha256") == sha:
                continue
            elif row["path"] not in owned and covered:
                continue  # the first part's bundle-level file covers this part's adapters
            else:
                raise ValueError(f"{row['path']} differs between {source} and {part}")
    write_manifest(out, merged)
    return out


def export_real(preset: str, work: Path, backends: list[str], timed: tuple[str, ...], reuse: bool, log) -> Path:
    """Real sizes on a small machine: external with every adapter (switching, base + adapters
    memory), fused only for the timed adapters (a fused export is one full model per adapter)."""
    src = work / f"src-{preset}"
    if not (src / "model").is_dir():
        write_preset(preset, src)
    adapters = {p.name: p for p in sorted((src / "adapters").iterdir())}
    parts = []
    for mode, names in ((AdapterMode.EXTERNAL, list(adapters)), (AdapterMode.FUSED, list(timed))):
        part = work / f"{mode.value}-{preset}"
        parts.append(part)
        if reuse and (part / "manifest.json").is_file():
            continue
        log(f"export {preset} {mode.value} ({', '.join(backends)}; adapters {', '.join(names)})")
        run_export(ExportOptions(out=part, model=str(src / "model"), adapters={n: adapters[n] for n in names},
                                 backends=[BackendName(b) for b in backends], adapter_modes=[mode],
                                 quants=REAL_QUANTS[mode], check_parity=False, force=True), show_progress=False)
    return merge_bundles(work / f"bundle-{preset}", parts)


def run_preset(preset: str, out: Path, work: Path, backends: list[str], reuse: bool, log, threads: list[int] | None = None,
               llama_bench: Path | None = None, quants: list[str] | None = None, loop: bool = False, rounds: int = 1) -> dict:
    kind = "real" if get_preset(preset).real_size else "tiny"
    bundle = work / f"bundle-{preset}"
    t0 = time.perf_counter()
    if reuse and (bundle / "manifest.json").is_file():
        log(f"reuse {bundle}")
    elif kind == "real":
        bundle = export_real(preset, work, backends, SETTINGS["real"]["adapters"], reuse, log)
    else:
        log(f"export {preset} ({', '.join(backends)})")
        run_export(ExportOptions(out=bundle, model=preset, backends=[BackendName(b) for b in backends],
                                 adapter_modes=[AdapterMode.EXTERNAL, AdapterMode.FUSED],
                                 quants=[Quant.NONE, Quant.INT8, Quant.INT4], check_parity=True,
                                 force=True), show_progress=False)
    export_s = time.perf_counter() - t0
    runs, vs = {}, []
    for r in range(rounds):  # every runner and llama.cpp at every thread count, then again
        vs.append({})
        for i, n in enumerate(threads or [SETTINGS[kind]["threads"]]):  # one bench per thread count, llama.cpp in each
            dest = out / preset / (f"round-{r + 1}" if rounds > 1 else "") / (f"threads-{n}" if threads and len(threads) > 1 else "")
            settings = dict(SETTINGS[kind], threads=n)
            log(f"round {r + 1}/{rounds}, {n} thread(s)" if rounds > 1 else f"{n} thread(s)")
            result = run_bench(bundle, dest, log=log, llama_bench=llama_bench, backends=backends, quants=quants,
                               gguf_dir=work / f"gguf-{preset}", loop=loop and i == 0 and r == 0, **settings)
            runs[f"{r + 1}/{n}" if rounds > 1 else n] = dict(summary=result.summary, peers=result.doc.get("peers"),
                                                              files=[str(p) for p in (result.json_path, result.md_path, *result.plots)])
            vs[r][n] = result.summary.get("vs_llamacpp") or {}
    doc = dict(preset=preset, status="ok", export_s=export_s, bench_s=time.perf_counter() - t0 - export_s, runs=runs)
    if rounds > 1 and any(vs):
        doc["rounds"] = combined = rounds_mod.combine(vs)
        (out / preset / "rounds.md").write_text(rounds_mod.markdown(combined, preset))
        (out / preset / "rounds.json").write_text(json.dumps(combined, indent=1))
    return doc


def llama_cpp_peer(binary: str | None) -> dict:
    """Which llama-bench the suite hands every bench (issue 17 item 6); never required."""
    from memlora.bench import llamacpp

    found = llamacpp.find_binary(binary)
    if found is None:
        return dict(peer="llama.cpp", status="not measured",
                    reason="no llama-bench (--llama-bench, LLAMA_BENCH or PATH); build llama.cpp from source to add it")
    return dict(peer="llama.cpp", status="measured in each bench", binary=str(found), version=llamacpp.version(found),
                reason=f"{found}, llama-quantize {'found' if found.with_name('llama-quantize').is_file() else 'missing: f32 only'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/memlora-suite"), help="results folder")
    ap.add_argument("--work", type=Path, default=Path("/tmp/memlora-suite-bundles"), help="bundles (not in the repo)")
    ap.add_argument("--real", action="store_true", help="also the real-size shapes")
    ap.add_argument("--presets", help="comma-separated presets instead of the standard list")
    ap.add_argument("--backends", help="comma-separated (default: every backend that runs here)")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already in --work")
    ap.add_argument("--threads", help="comma-separated thread counts, one bench each (default: 1)")
    ap.add_argument("--quants", help="comma-separated quants to bench (default: all in the bundle)")
    ap.add_argument("--llama-bench", help="llama-bench binary for llama.cpp peer rows (default: LLAMA_BENCH or PATH)")
    ap.add_argument("--loop", action="store_true", help="also a memory-loop turn (bench --loop), at the first thread count")
    ap.add_argument("--rounds", type=int, default=1,
                    help="bench everything this many times in turn; rounds.md gives the median ratios (default 1)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be 1 or more")
    presets = args.presets.split(",") if args.presets else [TINY, *(REAL if args.real else ())]
    backends = args.backends.split(",") if args.backends else [b for b in ("onnx", "executorch") if runnable(b) is None]
    args.out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    report = []
    peer = llama_cpp_peer(args.llama_bench)
    threads = [int(n) for n in args.threads.split(",")] if args.threads else None
    quants = args.quants.split(",") if args.quants else None
    log(f"llama.cpp: {peer['status']} ({peer['reason']})")
    for preset in presets:
        reason = fits(preset)
        if reason:
            log(f"skip {preset}: {reason}")
            report.append(dict(preset=preset, status="skipped", reason=reason))
        else:
            try:
                report.append(run_preset(preset, args.out, args.work, backends, args.reuse, log, threads,
                                         Path(peer["binary"]) if "binary" in peer else None, quants, args.loop,
                                         args.rounds))
            except Exception as e:  # one preset failing must not lose the others' results
                log(f"{preset} failed: {type(e).__name__}: {e}")
                report.append(dict(preset=preset, status="error", reason=f"{type(e).__name__}: {e}"))
        (args.out / "suite.json").write_text(json.dumps(report + [peer], indent=1))
    return 0 if all(r["status"] != "error" for r in report) else 1


if __name__ == "__main__":
    sys.exit(main())
