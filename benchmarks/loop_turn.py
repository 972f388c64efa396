"""One memory-loop turn (extract + update + answer) with and without prefix KV reuse.

A fixed three-turn conversation runs twice over the same bundle and backend: once prefilling every
prompt in full, once reusing each adapter's kept KV cache of its template's constant head
(``LoopSettings.reuse_prefix``). The generated texts of every operation must be identical in both
runs; the script fails otherwise. Turn 1 of the reuse run also builds the three heads (cold); turns
2.. are the steady state an app sees. Generation is capped (``--max-new``) because a random-weight
preset never emits a stop token: the figures are about prefill, which the template dominates.

    python benchmarks/loop_turn.py --preset tiny-qwen2
    python benchmarks/loop_turn.py --preset qwen2.5-0.5b-shape --quant int4 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))

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


def export_bundle(preset: str, quant: str, out: Path) -> Path:
    from memlora.core.config import Quant
    from memlora.export import ExportOptions, run_export
    from memlora.sources.presets import write_preset

    model_dir, adapters = write_preset(preset, out / "src")
    bundle = out / "bundle"
    run_export(ExportOptions(out=bundle, model=str(model_dir), adapters=adapters, quants=[Quant(quant)],
                             parity_tokens=4), show_progress=False)
    return bundle


def run(bundle: Path, backend: str, quant: str, threads: int | None, reuse: bool, max_new: int, db: Path):
    from memlora.memory import LoopSettings, MemoryStore
    from memlora.memory.engine import GenerationSettings
    from memlora.memory.prompts import DialogTurn
    from memlora.runtime import open_bundle

    session = open_bundle(bundle, backend, quant=None if quant == "none" else quant, threads=threads,
                          embedder=False)
    gen = lambda: GenerationSettings(max_new_tokens=max_new, eos_ids=session.eos_ids)  # noqa: E731
    settings = LoopSettings(extract=gen(), update=gen(), answer=gen(), reuse_prefix=reuse)
    loop = session.loop(MemoryStore(db), settings)
    turns, texts = [], []
    try:
        for dialog, facts, question in CONVERSATION:
            row = {}
            t0 = time.perf_counter()
            loop.extract([DialogTurn(s, t) for s, t in dialog], today="2023-05-08")
            row["extract_ms"] = (time.perf_counter() - t0) * 1e3
            t1 = time.perf_counter()
            loop.update(facts, "caroline", at="2023-05-08T12:00:00")
            row["update_ms"] = (time.perf_counter() - t1) * 1e3
            t2 = time.perf_counter()
            loop.answer(question, "caroline")
            row["answer_ms"] = (time.perf_counter() - t2) * 1e3
            row["turn_ms"] = (time.perf_counter() - t0) * 1e3
            turns.append({k: round(v, 1) for k, v in row.items()})
            texts.append(dict(loop.last_raw))
        stats = loop.stats_dict()
    finally:
        session.close()
    return turns, texts, stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny-qwen2")
    ap.add_argument("--bundle", type=Path, help="an existing bundle (default: export the preset)")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--quant", default="none")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--max-new", type=int, default=8)
    ap.add_argument("--out", type=Path, help="results .json (a .md beside it)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memlora-loop-turn-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        bundle = args.bundle or export_bundle(args.preset, args.quant, tmp)
        export_s = time.perf_counter() - t0
        runs = {}
        for reuse in (False, True):
            runs[reuse] = run(bundle, args.backend, args.quant, args.threads, reuse, args.max_new,
                              tmp / f"store-{reuse}.db")
    same = runs[False][1] == runs[True][1]
    full, reused = runs[False][0], runs[True][0]
    steady = lambda rows, k: sum(r[k] for r in rows[1:]) / max(1, len(rows) - 1)  # noqa: E731
    result = {
        "preset": args.preset, "backend": args.backend, "quant": args.quant, "threads": args.threads,
        "max_new_tokens": args.max_new, "machine": platform.processor() or platform.machine(),
        "export_s": round(export_s, 1), "identical_outputs": same,
        "full_prefill": {"turns": full, "stats": runs[False][2]},
        "prefix_reuse": {"turns": reused, "stats": runs[True][2]},
        "steady_turn_ms": {"full_prefill": round(steady(full, "turn_ms"), 1),
                           "prefix_reuse": round(steady(reused, "turn_ms"), 1)},
    }
    result["speedup"] = round(result["steady_turn_ms"]["full_prefill"] / result["steady_turn_ms"]["prefix_reuse"], 2)
    lines = [f"# Loop turn: {args.preset}, {args.backend} {args.quant}, threads {args.threads or 'default'}",
             "", f"max_new_tokens {args.max_new} per operation; identical outputs: {same}", "",
             "| turn | full prefill ms (extract / update / answer = turn) | prefix reuse ms (extract / update / answer = turn) |",
             "|---|---|---|"]
    for i, (a, b) in enumerate(zip(full, reused), 1):
        f = lambda r: f"{r['extract_ms']} / {r['update_ms']} / {r['answer_ms']} = **{r['turn_ms']}**"  # noqa: E731
        lines.append(f"| {i}{' (heads built)' if i == 1 else ''} | {f(a)} | {f(b)} |")
    st = runs[True][2]
    lines += ["", f"Steady turn (turns 2..): {result['steady_turn_ms']['full_prefill']} ms -> "
              f"{result['steady_turn_ms']['prefix_reuse']} ms ({result['speedup']}x). Prompt tokens per "
              f"operation call: " + ", ".join(f"{op} {s['prompt_tokens'] / max(1, s['calls']):.0f} "
                                              f"({s['reused_tokens'] / max(1, s['calls']):.0f} reused)"
                                              for op, s in st.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
