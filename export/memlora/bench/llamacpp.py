"""llama.cpp as a peer row: the bench's own source weights as GGUF, timed by ``llama-bench``.

Optional and never built here: ``run_bench(llama_bench=PATH)`` (or ``$LLAMA_BENCH``, or
``llama-bench`` on PATH) turns the reference model folder into an f32 GGUF
(:mod:`memlora.bench.gguf_convert`), quantizes it with the ``llama-quantize`` beside the binary
(``q8_0``, ``q4_0`` with llama.cpp's default mix, and ``q4_0 --pure``: every matrix, the table
too, in q4_0), and runs ``llama-bench -o json`` at the bench's thread count: prefill ``pp N`` at
each prompt length and decode ``tg`` at depth ``decode_prompt_len`` (the same position memlora's
decode starts from). Rows use the bench row format (runner ``llama.cpp/gguf/<type>``, adapter
``none``: llama.cpp runs the base, so each memlora-vs-llama.cpp ratio charges memlora its LoRA).
Without a binary the peer is recorded as not measured, with the reason.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .roofline import kv_bytes

# memlora quant -> the llama.cpp types it is compared with (same bit width).
PEERS = {"none": ("f32",), "int8": ("q8_0",), "int4": ("q4_0", "q4_0-pure")}
QUANTIZE_ARGS = {"q8_0": ["Q8_0"], "q4_0": ["Q4_0"], "q4_0-pure": ["--pure", "Q4_0"]}
RUNNER = "llama.cpp/gguf/{}"


def find_binary(explicit: str | Path | None = None) -> Path | None:
    """``explicit``, else ``$LLAMA_BENCH``, else ``llama-bench`` on PATH; None if none of them is a file."""
    for cand in (explicit, os.environ.get("LLAMA_BENCH"), shutil.which("llama-bench")):
        if cand and Path(cand).is_file():
            return Path(cand).resolve()
    return None


def source_tree(binary: Path) -> Path | None:
    """The llama.cpp checkout a ``build/bin/llama-bench`` was built in (for its ``gguf-py``)."""
    for parent in binary.parents:
        if (parent / "gguf-py").is_dir():
            return parent
    return None


def version(binary: Path) -> str | None:
    """``llama-bench --version`` (e.g. ``version: 7210 (0c1e570)``), or None."""
    try:
        p = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (p.stdout + p.stderr).strip().splitlines()
    return next((line.strip() for line in text if line.startswith("version")), text[0] if text else None)


def prepare(binary: Path, model_dir: Path, work: Path, say) -> dict[str, Path]:
    """GGUF files by type: f32 converted, the rest by ``llama-quantize`` (skipped without it)."""
    from .gguf_convert import convert

    work.mkdir(parents=True, exist_ok=True)
    f32 = work / "model-f32.gguf"
    if not f32.is_file():
        say(f"llama.cpp: convert {model_dir.name} to GGUF f32")
        convert(model_dir, f32, source_tree(binary))
    files = {"f32": f32}
    quantize = binary.with_name("llama-quantize")
    if not quantize.is_file():
        return files
    for kind, args in QUANTIZE_ARGS.items():
        out = work / f"model-{kind}.gguf"
        if not out.is_file():
            say(f"llama.cpp: llama-quantize {kind}")
            tmp = out.with_name(out.name + ".tmp")
            subprocess.run([str(quantize), *args[:-1], str(f32), str(tmp), args[-1]], check=True,
                           capture_output=True, timeout=3600)
            os.replace(tmp, out)
        files[kind] = out
    return files


def run_llama_bench(binary: Path, gguf: Path, threads: int, repeats: int, *, prompts=(), gen: int = 0,
                    depth: int = 0, timeout_s: float = 3600) -> list[dict]:
    """One ``llama-bench -o json`` call; returns its records."""
    cmd = [str(binary), "-m", str(gguf), "-t", str(threads), "-r", str(repeats), "-o", "json",
           "-p", ",".join(map(str, prompts or [0])), "-n", str(gen), "-d", str(depth)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise RuntimeError(f"llama-bench failed: {tail[:300]}")
    return json.loads(p.stdout)


def gguf_bytes(path: Path, source: Path | None) -> tuple[int, int, int]:
    """(bytes of every tensor, bytes of a gather-only token table, one row of it): the table is
    gather-only when the file has its own ``output.weight``; tied, it is the LM head, read in full."""
    from .gguf_convert import import_gguf

    reader = import_gguf(source).GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    rows = {t.name: int(t.shape[-1]) if len(t.shape) > 1 else 1 for t in reader.tensors}
    table = sizes.get("token_embd.weight", 0) if "output.weight" in sizes else 0
    return sum(sizes.values()), table, table // max(1, rows.get("token_embd.weight", 1))


def rows_from(records: list[dict], kind: str, gguf: Path, shape: dict | None, gbps: float, tensors) -> list[dict]:
    """llama-bench records -> bench rows (prefill / TTFT per prompt, decode with its roofline)."""
    base = dict(runner=RUNNER.format(kind), backend="llama.cpp", adapter_mode="gguf", quant=kind, adapter="none",
                status="ok", parity=None)
    size = gguf.stat().st_size
    out = [dict(base, metric="disk_total_bytes", unit="B", value=size, shared_bytes=size),
           dict(base, metric="disk_bytes", unit="B", value=size, own_bytes=0)]
    for r in records:
        ts = r.get("samples_ts") or [r["avg_ts"]]
        stats = dict(value=sorted(ts)[len(ts) // 2], min=min(ts), max=max(ts), n=len(ts))
        note = f"llama-bench {'pp' if r['n_prompt'] else 'tg'}{r['n_prompt'] or r['n_gen']} at depth {r['n_depth']}, " \
               f"{r['n_threads']} threads, {r.get('type_k', 'f16')} KV cache"
        if r["n_prompt"]:
            n = r["n_prompt"]
            out.append(dict(base, metric="prefill_tps", unit="tok/s", prompt_len=n, requested_prompt_len=n, note=note, **stats))
            out.append(dict(base, metric="ttft_ms", unit="ms", prompt_len=n, requested_prompt_len=n, note=note,
                            value=1e3 * n / stats["value"], min=1e3 * n / stats["max"], max=1e3 * n / stats["min"], n=stats["n"]))
            continue
        row = dict(base, metric="decode_tps", unit="tok/s", prompt_len=r["n_depth"], decode_tokens=r["n_gen"], note=note, **stats)
        total, table, table_row = tensors
        if shape:
            kv = kv_bytes(shape, r["n_depth"] + r["n_gen"] / 2, 2 if r.get("type_k", "f16") == "f16" else 4)
            n_bytes = total - table + table_row + kv
            row.update(weight_bytes_per_token=n_bytes, matmul_bytes=total - table, table_row_bytes=table_row,
                       kv_bytes=kv, gathered_table_bytes=table, bytes_method="gguf tensors (tied table read in full as the head)",
                       roofline_tps=gbps * 1e9 / n_bytes, achieved_gbps=stats["value"] * n_bytes / 1e9,
                       roofline_fraction=stats["value"] * n_bytes / (gbps * 1e9))
        out.append(row)
    return out


def measure(binary: Path | None, model_dir: Path, work: Path, *, threads: int, prompt_lens, decode_prompt_len: int,
            decode_tokens: int, repeats: int, shape: dict | None, gbps: float, say) -> tuple[dict, list[dict]]:
    """(the peer's record for bench.json, its rows). Any failure is recorded, never raised."""
    if binary is None:
        return dict(status="not measured", reason="no llama-bench given (--llama-bench, $LLAMA_BENCH or PATH); "
                    "build llama.cpp from source to add it (benchmarks/README.md)"), []
    info: dict = dict(status="ok", binary=str(binary), version=version(binary), threads=threads, gguf={})
    rows: list[dict] = []
    try:
        files = prepare(binary, Path(model_dir), work, say)
        if len(files) < len(QUANTIZE_ARGS) + 1:
            info["note"] = "no llama-quantize beside llama-bench: f32 only"
        for kind, gguf in files.items():
            say(f"bench llama.cpp {kind} ({threads} threads)")
            recs = run_llama_bench(binary, gguf, threads, repeats, prompts=list(prompt_lens))
            recs += run_llama_bench(binary, gguf, threads, repeats, gen=decode_tokens, depth=decode_prompt_len)
            info["gguf"][kind] = gguf.stat().st_size
            info.setdefault("build_commit", recs[0].get("build_commit"))
            rows += rows_from(recs, kind, gguf, shape, gbps, gguf_bytes(gguf, source_tree(binary)))
    except Exception as e:  # noqa: BLE001 - the peer never takes the bench down with it
        info.update(status="error", reason=f"{type(e).__name__}: {e}")
    return info, rows
