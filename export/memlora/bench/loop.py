"""One memory-loop turn (extract + update + answer) with and without prefix KV reuse, timed.

A fixed three-turn conversation runs twice over the same bundle and backend: once prefilling every
prompt in full, once reusing each adapter's kept KV cache of its template's constant head
(``LoopSettings.reuse_prefix``). The generated texts of every operation must be identical in both
runs (``identical_outputs``). Turn 1 of the reuse run also builds the three heads (cold); turns 2..
are the steady state an app sees. Generation is capped (``max_new``) because a random-weight preset
never emits a stop token: the figures are about prefill, which the template dominates. Each
operation's time is split into prefill, decode and the rest (template, tokenizing, parsing the JSON,
the store's writes and searches). ``memlora bench --loop`` runs it per backend and quant of the
bundle's external artifacts, each in its own process (``python -m memlora.bench.loop``).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONVERSATION = [
    ([("Caroline", "I went to a LGBTQ support group yesterday and it was really powerful."),
      ("Melanie", "That's great! I painted a sunrise last week, my first in oil.")],
     ["Went to a LGBTQ support group", "Painted a sunrise in oil"], "What did Melanie paint?"),
    ([("Melanie", "We went camping with the kids near the lake last weekend."),
      ("Caroline", "I'm researching adoption agencies, hoping to start the process this year.")],
     ["Went camping with the kids", "Researching adoption agencies"], "What is Caroline researching?"),
    ([("Caroline", "My favourite book is still Becoming Nicole, I reread it every summer."),
      ("Melanie", "I signed up for a pottery class on Thursdays.")],
     ["Favourite book is Becoming Nicole", "Takes a pottery class on Thursdays"], "What class did Melanie sign up for?"),
]
OPS = ("extract", "update", "answer")


def _turns(loop):
    """Run the conversation; per turn and operation: wall, prefill and decode ms; and the raw texts."""
    from memlora.memory.prompts import DialogTurn

    turns, texts = [], []
    for dialog, facts, question in CONVERSATION:
        row, before = {}, {op: dict(s) for op, s in loop.stats_dict().items()}
        t0 = time.perf_counter()
        calls = (lambda: loop.extract([DialogTurn(s, t) for s, t in dialog], today="2023-05-08"),
                 lambda: loop.update(facts, "caroline", at="2023-05-08T12:00:00"),
                 lambda: loop.answer(question, "caroline"))
        for op, call in zip(OPS, calls):
            t1 = time.perf_counter()
            call()
            row[f"{op}_ms"] = (time.perf_counter() - t1) * 1e3
        row["turn_ms"] = (time.perf_counter() - t0) * 1e3
        after = loop.stats_dict()
        for op in OPS:
            was = before.get(op, {})
            for part in ("prefill", "decode"):
                row[f"{op}_{part}_ms"] = (after[op][f"{part}_s"] - was.get(f"{part}_s", 0.0)) * 1e3
            row[f"{op}_other_ms"] = row[f"{op}_ms"] - row[f"{op}_prefill_ms"] - row[f"{op}_decode_ms"]
        turns.append({k: round(v, 1) for k, v in row.items()})
        texts.append(dict(loop.last_raw))
    return turns, texts, loop.stats_dict()


def run(bundle: Path, backend: str, quant: str, threads: int | None, reuse: bool, max_new: int, db: Path):
    """One pass over the conversation: (turns, raw texts, per-operation stats)."""
    from memlora.memory import LoopSettings, MemoryStore
    from memlora.memory.engine import GenerationSettings
    from memlora.runtime import open_bundle

    session = open_bundle(bundle, backend, quant=None if quant == "none" else quant, threads=threads, embedder=False)
    gen = lambda: GenerationSettings(max_new_tokens=max_new, eos_ids=session.eos_ids)  # noqa: E731
    loop = session.loop(MemoryStore(db), LoopSettings(extract=gen(), update=gen(), answer=gen(), reuse_prefix=reuse))
    try:
        return _turns(loop)
    finally:
        session.close()


def loop_turn(bundle: Path, backend: str, quant: str, threads: int | None = None, max_new: int = 8) -> dict:
    """Both passes, the steady turn (mean of turns 2..) of each, the speed-up, and whether the
    two passes generated the same text."""
    with tempfile.TemporaryDirectory(prefix="memlora-loop-turn-") as tmp:
        runs = {reuse: run(Path(bundle), backend, quant, threads, reuse, max_new, Path(tmp) / f"store-{reuse}.db")
                for reuse in (False, True)}
    full, reused = runs[False][0], runs[True][0]

    def steady(rows, k):
        return round(sum(r[k] for r in rows[1:]) / max(1, len(rows) - 1), 1)

    keys = [k for k in full[0] if k.endswith("_ms")]
    out = dict(backend=backend, quant=quant, threads=threads, max_new_tokens=max_new,
               identical_outputs=runs[False][1] == runs[True][1],
               full_prefill=dict(turns=full, stats=runs[False][2], steady={k: steady(full, k) for k in keys}),
               prefix_reuse=dict(turns=reused, stats=runs[True][2], steady={k: steady(reused, k) for k in keys}))
    out["steady_turn_ms"] = {m: out[m]["steady"]["turn_ms"] for m in ("full_prefill", "prefix_reuse")}
    out["speedup"] = round(out["steady_turn_ms"]["full_prefill"] / out["steady_turn_ms"]["prefix_reuse"], 2)
    return out


def measure(manifest: dict, bundle: Path, threads: int | None, say, timeout_s: float = 3600) -> list[dict]:
    """:func:`loop_turn` per (backend, quant) of the bundle's external artifacts, each in a fresh process."""
    from .run import runnable

    pairs = sorted({(a["backend"], a["quant"]) for a in manifest["artifacts"] if a["adapter_mode"] == "external"})
    results = []
    for backend, quant in pairs:
        reason = runnable(backend)
        if reason:
            results.append(dict(backend=backend, quant=quant, status="unavailable", reason=reason))
            continue
        say(f"memory-loop turn {backend}/{quant}")
        job = json.dumps(dict(bundle=str(bundle), backend=backend, quant=quant, threads=threads))
        p = subprocess.run([sys.executable, "-m", "memlora.bench.loop"], input=job, capture_output=True, text=True,
                           timeout=timeout_s, env=_env(threads))
        try:
            results.append(dict(json.loads(p.stdout.strip().splitlines()[-1]), status="ok"))
        except (IndexError, json.JSONDecodeError):
            tail = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            results.append(dict(backend=backend, quant=quant, status="error", reason=tail[:300]))
    return results


def _env(threads: int | None) -> dict:
    import os

    import memlora

    root = str(Path(memlora.__file__).resolve().parents[1])
    return dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads or 1),
                PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))


def section(loops: list[dict] | None) -> list[str]:
    """bench.md lines: the steady turn per backend, with and without prefix reuse, and its breakdown."""
    if not loops:
        return []
    out = ["## Memory-loop turn (extract + update + answer, fixed conversation)", "",
           "Steady turn = mean of turns 2-3 (turn 1 of the reuse run builds the heads). Per operation: "
           "wall ms = prefill + decode + other (template, tokenizer, JSON parse, store).", "",
           "| runner | full prefill turn ms | prefix reuse turn ms | speed-up | identical outputs | "
           "reuse: extract / update / answer ms (prefill + decode + other) |", "|---|---|---|---|---|---|"]
    for r in loops:
        if r["status"] != "ok":
            out.append(f"| {r['backend']}/external/{r['quant']} | {r['status']}: {r.get('reason')} | | | | |")
            continue
        s = r["prefix_reuse"]["steady"]
        parts = " / ".join(f"{s[f'{op}_ms']:.0f} ({s[f'{op}_prefill_ms']:.0f} + {s[f'{op}_decode_ms']:.0f} + "
                           f"{s[f'{op}_other_ms']:.0f})" for op in OPS)
        out.append(f"| {r['backend']}/external/{r['quant']} | {r['steady_turn_ms']['full_prefill']:.0f} | "
                   f"{r['steady_turn_ms']['prefix_reuse']:.0f} | {r['speedup']:.2f}x | "
                   f"{'yes' if r['identical_outputs'] else '**no**'} | {parts} |")
    return out + [""]


if __name__ == "__main__":  # a job on stdin -> one JSON line on stdout
    job = json.loads(sys.stdin.read())
    print(json.dumps(loop_turn(Path(job["bundle"]), job["backend"], job["quant"], job.get("threads"))))
