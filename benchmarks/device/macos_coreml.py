"""Time memlora's Core ML exports with Apple's runtime (``MLModel.predict`` + state) on a Mac.

CANNOT RUN HERE: Core ML prediction needs macOS 15+ (coremltools refuses ``predict`` on Linux,
and memlora's Linux fallback, a NumPy evaluator of the MIL program, checks numerics only; its
speed means nothing, so ``memlora bench`` reports Core ML as not measured off macOS). Nothing
in this script has been run on a Mac yet.

    python benchmarks/device/macos_coreml.py BUNDLE --out /tmp/coreml-bench [--repeats 5] [--conformance-only]

First, every Core ML artifact of BUNDLE runs the bundle's ``conformance.json`` vectors with Apple's
runtime (``MLModel.predict`` + ``make_state()``): the prompt token ids, then each adapter's greedy
prefix, ids equal to the PyTorch reference's. These are the vectors the Android and iOS apps'
self-tests run (``ios_demo/``), so a first Mac run proves Core ML parity with Apple's runtime
before any timing; ``conformance-coreml-<mode>-<quant>.json`` in --out (one per artifact) has the
shape of a phone's report (``python -m memlora.device_report`` reads it), and the script exits 1 on
any mismatch. ``--engine mil-numpy --conformance-only`` runs the same vectors through memlora's
NumPy MIL evaluator on any OS (a check of this script and of the export, not of Apple's runtime).

BUNDLE is a folder written by ``memlora export --backend coreml`` (external: one multifunction
``memlora.mlpackage``; fused: one package per adapter). The script is the same ``run_bench`` as
``memlora bench``, restricted to the Core ML artifacts: each artifact in its own process, PyTorch
eager (MPS is not used; CPU, fp32) as the reference, medians with min/max, peak RSS, disk,
a-b-a adapter switching (a switch is a new function + ``make_state()``). fp32 exports run on
CPU_ONLY; fp16 exports on ComputeUnit.ALL (ANE/GPU where Core ML chooses them), as the runner
sets. Outputs: bench.json, bench.md and PNGs in --out, as documented in benchmarks/README.md.
For the phone itself, use the iOS demo app's timing (ios_demo/) or Xcode's Core ML performance
report on the .mlpackage.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "export"))


def conformance_parity(bundle: Path, engine: str = "coreml-predict") -> dict:
    """Every Core ML artifact of ``bundle`` against its ``conformance.json``: prompt ids through the
    bundle's tokenizer and each greedy prefix (exactly n argmax tokens, no stop rule) through
    ``engine`` (Apple's runtime on macOS; ``mil-numpy`` runs anywhere). Returns a
    ``memlora-conformance-report`` per artifact key, as the phone apps write them."""
    import json

    from tokenizers import Tokenizer

    from memlora.backends.base import Artifact
    from memlora.backends.coreml.runner import CoreMLRunner
    from memlora.core.bundle import read_manifest
    from memlora.conformance import greedy, parse_case

    manifest = read_manifest(bundle)
    conf = json.loads((bundle / manifest.get("conformance", "conformance.json")).read_text("utf-8"))
    tok = Tokenizer.from_file(str(bundle / manifest.get("tokenizer", "tokenizer.json")))
    reports = {}
    for row in manifest["artifacts"]:
        if row["backend"] != "coreml":
            continue
        art = Artifact.from_json(row)
        runner = CoreMLRunner(art, bundle, engine=engine)
        cap = art.max_seq_len

        def greedy_case(g: dict) -> str | None:
            need = len(g["prompt_ids"]) + len(g["ids"])
            if cap is not None and need > cap:
                return f"prompt of {len(g['prompt_ids'])} tokens + {len(g['ids'])} new > max_seq_len {cap}: re-export with --max-seq-len {need} or more"
            got = greedy(runner, g["adapter"], g["prompt_ids"], len(g["ids"]))
            return None if got == g["ids"] else f"ids {got} != {g['ids']}"

        sections = {}
        for name, cases, run in (
                ("prompts", conf["prompts"],
                 lambda c: None if tok.encode(c["text"], add_special_tokens=False).ids == c["ids"] else "token ids differ"),
                ("greedy", [g for g in conf["greedy"] if g["adapter"] in runner.adapters], greedy_case)):
            failures = []
            for i, c in enumerate(cases):
                why = run(c)
                if why is not None:
                    failures.append(f"{name}[{i}]" + (f" ({c['adapter']})" if "adapter" in c else "") + f": {why}")
            sections[name] = {"total": len(cases), "failed": len(failures), "passed": not failures, "skipped": None,
                              "failures": failures[:20]}
        # parse is runtime-free (the Python parser here); run so the report has every section
        failures = [f"parse[{i}]: differs from the Python parser" for i, c in enumerate(conf["parse"])
                    if parse_case({k: v for k, v in c.items() if k != "expected"}) != c["expected"]]
        sections["parse"] = {"total": len(conf["parse"]), "failed": len(failures), "passed": not failures,
                             "skipped": None, "failures": failures[:20]}
        runner.close()
        reports[art.key] = {"format": "memlora-conformance-report", "version": 1, "chat_format": conf["chat_format"],
                            "passed": all(s["passed"] for s in sections.values()), "sections": sections,
                            "runtime": runner.numerics, "artifact": art.key, "machine": platform.machine(),
                            "macos": platform.mac_ver()[0]}
    return reports


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt-lens", default="64,256,1024", help="clipped to each export's max_seq_len - 1")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--conformance-only", action="store_true", help="check parity with Apple's runtime, no timing")
    ap.add_argument("--engine", default="coreml-predict", choices=["coreml-predict", "mil-numpy"],
                    help="mil-numpy (with --conformance-only): the same vectors through memlora's NumPy MIL "
                         "evaluator, on any OS; it checks this script and the export, not Apple's runtime")
    args = ap.parse_args(argv)
    if platform.system() != "Darwin" and not (args.engine == "mil-numpy" and args.conformance_only):
        print("macos_coreml.py: Core ML prediction needs macOS 15 or newer; nothing was measured.", file=sys.stderr)
        return 2
    import json

    args.out.mkdir(parents=True, exist_ok=True)
    reports = conformance_parity(args.bundle, engine=args.engine)
    if not reports:
        print(f"macos_coreml.py: {args.bundle} has no Core ML artifact (memlora export --backend coreml)", file=sys.stderr)
        return 2
    for key, rep in reports.items():  # one report per artifact, as a phone writes it
        (args.out / f"conformance-{key.replace('/', '-')}.json").write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
    for key, rep in reports.items():
        line = ", ".join(f"{n} {s['total'] - s['failed']}/{s['total']}" for n, s in rep["sections"].items() if not s["skipped"])
        print(f"conformance {key} ({rep['runtime']}): {line}: {'passed' if rep['passed'] else 'FAILED'}", file=sys.stderr)
    if not all(r["passed"] for r in reports.values()):
        return 1
    if args.conformance_only:
        return 0
    from memlora.bench.run import run_bench
    from memlora.bench.report import table

    result = run_bench(args.bundle, args.out, backends=["coreml"], repeats=args.repeats,
                       prompt_lens=tuple(int(n) for n in args.prompt_lens.split(",")),
                       decode_tokens=args.decode_tokens, log=lambda m: print(m, file=sys.stderr))
    cols, cells = table(result.doc)
    print("\t".join(cols))
    for row in cells:
        print("\t".join(row))
    for runner, why in result.summary["not_measured"].items():
        print(f"not measured {runner}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
