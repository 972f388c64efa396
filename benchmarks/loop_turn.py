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

from memlora.bench.loop import loop_turn  # noqa: E402  (the conversation and the timing live there)


def export_bundle(preset: str, quant: str, out: Path) -> Path:
    from memlora.core.config import Quant
    from memlora.export import ExportOptions, run_export
    from memlora.sources.presets import write_preset

    model_dir, adapters = write_preset(preset, out / "src")
    bundle = out / "bundle"
    run_export(ExportOptions(out=bundle, model=str(model_dir), adapters=adapters, quants=[Quant(quant)],
                             parity_tokens=4), show_progress=False)
    return bundle


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
        result = loop_turn(bundle, args.backend, args.quant, args.threads, args.max_new)
    same = result["identical_outputs"]
    full, reused = result["full_prefill"]["turns"], result["prefix_reuse"]["turns"]
    result.update(preset=args.preset, machine=platform.processor() or platform.machine(), export_s=round(export_s, 1))
    lines = [f"# Loop turn: {args.preset}, {args.backend} {args.quant}, threads {args.threads or 'default'}",
             "", f"max_new_tokens {args.max_new} per operation; identical outputs: {same}", "",
             "| turn | full prefill ms (extract / update / answer = turn) | prefix reuse ms (extract / update / answer = turn) |",
             "|---|---|---|"]
    for i, (a, b) in enumerate(zip(full, reused), 1):
        f = lambda r: f"{r['extract_ms']} / {r['update_ms']} / {r['answer_ms']} = **{r['turn_ms']}**"  # noqa: E731
        lines.append(f"| {i}{' (heads built)' if i == 1 else ''} | {f(a)} | {f(b)} |")
    st = result["prefix_reuse"]["stats"]
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
