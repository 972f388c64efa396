"""Several benchmark rounds read together: the ratio to llama.cpp that a shared host cannot flip.

On a machine whose speed drifts by 10-25% over minutes, one bench run's ratio near 1.0 can land
either side of a target. ``benchmarks/run_suite.py --rounds N`` runs the whole bench (every
memlora runner and llama.cpp, at every thread count) N times in turn; each round's ratios are
same-run ratios (its own llama.cpp rows), and :func:`combine` reports, per thread count, bit
width and runner, every round's decode tok/s and ratio and their medians. A target counts as met
when the median over rounds of that round's deciding ratio (the best runner's, or the worst
one's for an "every runner" target) reaches it.
"""
from __future__ import annotations

import statistics


def combine(rounds: list[dict[int, dict]]) -> dict[int, dict]:
    """``rounds[r][threads]``: that round's ``summary["vs_llamacpp"]`` (:func:`memlora.bench.peers.compare`)
    -> ``{threads: {"<quant>/<peer>": entry}}`` with per-runner lists and medians over the rounds."""
    out: dict[int, dict] = {}
    for threads in sorted({t for r in rounds for t in r}):
        keys = {k for r in rounds for k in (r.get(threads) or {})}
        out[threads] = {key: _entry([r[threads][key] for r in rounds if key in (r.get(threads) or {})]) for key in sorted(keys)}
    return out


def _entry(per_round: list[dict]) -> dict:
    """One bit width at one thread count over the rounds that measured it."""
    runners = sorted({name for e in per_round for name in e["per_runner"]})
    per_runner = {}
    for name in runners:
        got = [e["per_runner"][name] for e in per_round if name in e["per_runner"]]
        per_runner[name] = dict(tps=[g["tps"] for g in got], ratio=[g["ratio"] for g in got],
                                median_tps=statistics.median(g["tps"] for g in got),
                                median_ratio=statistics.median(g["ratio"] for g in got))
    first = per_round[0]
    entry = dict(quant=first["quant"], peer=first["peer"], rounds=len(per_round),
                 peer_tps=[e["peer_tps"] for e in per_round], median_peer_tps=statistics.median(e["peer_tps"] for e in per_round),
                 per_runner=per_runner)
    if first.get("target") is not None:
        who = first["target_applies_to"]
        deciding = [e["best_ratio"] if who == "best" else e["worst_ratio"] for e in per_round]
        entry.update(target=first["target"], target_applies_to=who, deciding_ratio=deciding,
                     median_deciding_ratio=statistics.median(deciding),
                     met=statistics.median(deciding) >= first["target"])
    return entry


def markdown(combined: dict[int, dict], preset: str) -> str:
    """rounds.md: one table row per thread count, bit width and runner."""
    lines = [f"# {preset}: decode against llama.cpp over {_n_rounds(combined)} rounds", "",
             "Each round benches every runner and llama.cpp in turn; a ratio is memlora tok/s over llama.cpp "
             "tok/s in the same round. Medians are over the rounds; a target is met when the median of the "
             "rounds' deciding ratios (best runner, or worst for \"every\") reaches it.", "",
             "| threads | bit width | llama.cpp type | llama.cpp tok/s (rounds) | memlora runner | tok/s (rounds) "
             "| ratio (rounds) | median ratio | target | met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for threads, entries in combined.items():
        for key, e in entries.items():
            target = f"{e['target_applies_to']} >= {e['target']:g}x" if e.get("target") else "-"
            met = {True: "yes", False: "**no**", None: "-"}[e.get("met")]
            peer = " / ".join(f"{v:.1f}" for v in e["peer_tps"])
            for i, (name, p) in enumerate(sorted(e["per_runner"].items(), key=lambda kv: -kv[1]["median_tps"])):
                lines.append(f"| {threads} | {e['quant']} | {e['peer']} | {peer if i == 0 else ''} | {name} | "
                             f"{' / '.join(f'{v:.1f}' for v in p['tps'])} | {' / '.join(f'{v:.2f}' for v in p['ratio'])} | "
                             f"{p['median_ratio']:.2f}x | {target if i == 0 else ''} | {met if i == 0 else ''} |")
    return "\n".join(lines) + "\n"


def _n_rounds(combined: dict[int, dict]) -> int:
    return max((e["rounds"] for entries in combined.values() for e in entries.values()), default=0)
