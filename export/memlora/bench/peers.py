"""memlora against llama.cpp on the same weights, per bit width: the summary and its bench.md section.

Each memlora runner's decode tok/s (median over its adapters, LoRA applied) over llama.cpp's on
the base model at the same threads (:mod:`memlora.bench.llamacpp`). Targets (issue 17): every
int4 runner at least llama.cpp q4_0; the best int4 runner 1.2x llama.cpp q4_0 --pure (the table
in q4_0 too); fp32 ahead of llama.cpp f32.
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from .llamacpp import PEERS

# (memlora quant, llama.cpp type) -> (which memlora runners must meet it, ratio).
TARGETS = {("int4", "q4_0"): ("every", 1.0), ("int4", "q4_0-pure"): ("best", 1.2), ("none", "f32"): ("best", 1.0)}


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _medians(ok: list[dict], metric: str, prompt_len: int | None = None) -> dict[str, tuple[str, float]]:
    """memlora runner -> (quant, median over adapters) of ``metric``."""
    acc: dict = defaultdict(list)
    for r in ok:
        if r["metric"] == metric and r["backend"] not in ("pytorch", "llama.cpp") and r.get("adapter") not in (None, "a-b-a") \
                and (prompt_len is None or r.get("prompt_len") == prompt_len):
            acc[(r["runner"], r["quant"])].append(r["value"])
    return {runner: (quant, statistics.median(v)) for (runner, quant), v in acc.items()}


def compare(rows: list[dict]) -> dict:
    """``"<quant>/<llama.cpp type>"`` -> the peer's decode (and first-prompt prefill) tok/s, every
    memlora runner's tok/s and ratio at that bit width, the best, and the target where the issue set one."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("value") is not None]
    peer = {r["quant"]: r for r in ok if r["backend"] == "llama.cpp" and r["metric"] == "decode_tps"}
    if not peer:
        return {}
    first = min((r["prompt_len"] for r in ok if r["backend"] == "llama.cpp" and r["metric"] == "prefill_tps"), default=None)
    peer_pre = {r["quant"]: r["value"] for r in ok if r["backend"] == "llama.cpp" and r["metric"] == "prefill_tps"
                and r["prompt_len"] == first}
    decode, prefill = _medians(ok, "decode_tps"), _medians(ok, "prefill_tps", first)
    out = {}
    for quant, kinds in PEERS.items():
        mine = {runner: tps for runner, (q, tps) in decode.items() if q == quant}
        for kind in kinds:
            if kind not in peer or not mine:
                continue
            base = peer[kind]["value"]
            per = {runner: dict(tps=tps, ratio=tps / base,
                                prefill_ratio=(prefill[runner][1] / peer_pre[kind]) if runner in prefill and peer_pre.get(kind) else None)
                   for runner, tps in mine.items()}
            best = max(per, key=lambda k: per[k]["tps"])
            entry = dict(quant=quant, peer=kind, peer_tps=base, peer_prefill_tps=peer_pre.get(kind), prefill_len=first,
                         peer_roofline_fraction=peer[kind].get("roofline_fraction"), per_runner=per, best=best,
                         best_ratio=per[best]["ratio"], worst_ratio=min(p["ratio"] for p in per.values()))
            who, target = TARGETS.get((quant, kind), (None, None))
            if target is not None:
                got = entry["best_ratio"] if who == "best" else entry["worst_ratio"]
                entry.update(target=target, target_applies_to=who, met=got >= target)
            out[f"{quant}/{kind}"] = entry
    return out


def section(doc: dict) -> list[str]:
    """bench.md lines: the peer's status and, when measured, one row per memlora runner and bit width."""
    info = (doc.get("peers") or {}).get("llama.cpp")
    if info is None:
        return []
    head = ["## Against llama.cpp (same weights, same threads)", ""]
    if info["status"] != "ok":
        return head + [f"llama.cpp: {info['status']} ({info.get('reason')}).", ""]
    sizes = ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in info.get("gguf", {}).items())
    head += [f"`{info.get('version')}` ({info['binary']}); GGUF files: {sizes}. llama.cpp runs the base model "
             "(no LoRA); memlora runners carry their adapter. Decode: llama-bench `tg` at the depth memlora's "
             "decode starts from; ratio = memlora tok/s / llama.cpp tok/s (above 1: memlora is faster).", "",
             "| bit width | llama.cpp type | llama.cpp decode tok/s | % roof | memlora runner | decode tok/s | ratio "
             "| prefill ratio | target | met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, c in (doc["summary"].get("vs_llamacpp") or {}).items():
        target = f"{c['target_applies_to']} >= {c['target']:g}x" if c.get("target") else "-"
        met = {True: "yes", False: "**no**", None: "-"}[c.get("met")]
        roof = c.get("peer_roofline_fraction")
        for runner, p in sorted(c["per_runner"].items(), key=lambda kv: -kv[1]["tps"]):
            best = runner == c["best"]
            head.append(f"| {c['quant']} | {c['peer']} | {c['peer_tps']:.1f} | {_fmt(roof and 100 * roof, '.0f')} | "
                        f"{runner}{' (best)' if best else ''} | {p['tps']:.1f} | {p['ratio']:.2f}x | "
                        f"{_fmt(p['prefill_ratio'], '.2f')}{'x' if p['prefill_ratio'] else ''} | "
                        f"{target if best else ''} | {met if best else ''} |")
    return head + ["", f"Prefill ratio: memlora prefill tok/s over llama-bench `pp` at {_first_len(doc)} tokens.", ""]


def _first_len(doc: dict) -> str:
    got = [c.get("prefill_len") for c in (doc["summary"].get("vs_llamacpp") or {}).values() if c.get("prefill_len")]
    return str(got[0]) if got else "-"
