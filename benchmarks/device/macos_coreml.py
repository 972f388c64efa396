"""Time memlora's Core ML exports with Apple's runtime (``MLModel.predict`` + state) on a Mac.

CANNOT RUN HERE: Core ML prediction needs macOS 15+ (coremltools refuses ``predict`` on Linux,
and memlora's Linux fallback, a NumPy evaluator of the MIL program, checks numerics only; its
speed means nothing, so ``memlora bench`` reports Core ML as not measured off macOS). Nothing
in this script has been run on a Mac yet.

    python benchmarks/device/macos_coreml.py BUNDLE --out /tmp/coreml-bench [--repeats 5]

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompt-lens", default="64,256,1024", help="clipped to each export's max_seq_len - 1")
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if platform.system() != "Darwin":
        print("macos_coreml.py: Core ML prediction needs macOS 15 or newer; nothing was measured.", file=sys.stderr)
        return 2
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
