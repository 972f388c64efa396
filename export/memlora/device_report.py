"""Check a phone's self-test report (``conformance-report.json`` written by the Android app).

    python -m memlora.device_report REPORT.json [--bundle BUNDLE]

The app runs the bundle's ``conformance.json`` on the device and writes one result per section
(``prompts``, ``parse``, ``greedy``, ``tokenizer``). This prints them and exits 1 unless every
section that ran passed, ``prompts``, ``parse`` and ``greedy`` did run, and (with ``--bundle``) each
ran at least as many checks as the bundle has vectors, so a report cannot pass by skipping.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REQUIRED = ("prompts", "parse", "greedy")


def check_report(report: dict, conformance: dict | None = None) -> list[str]:
    """The reasons ``report`` does not prove conformance (empty when it does)."""
    if report.get("format") != "memlora-conformance-report":
        return ["not a memlora conformance report"]
    problems = []
    sections = report.get("sections") or {}
    for name in REQUIRED:
        s = sections.get(name)
        if s is None or s.get("skipped"):
            problems.append(f"{name}: did not run ({(s or {}).get('skipped') or 'missing'})")
    for name, s in sections.items():
        if not s.get("skipped") and (s.get("failed") or not s.get("passed")):
            problems.append(f"{name}: {s.get('failed')} of {s.get('total')} checks failed: {s.get('failures', [])[:3]}")
    if conformance is not None:
        for name in REQUIRED:
            s = sections.get(name) or {}
            want = len(conformance.get(name, []))
            if not s.get("skipped") and s.get("total", 0) < want:
                problems.append(f"{name}: ran {s.get('total', 0)} checks, the bundle has {want} vectors")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memlora.device_report", description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--bundle", help="the bundle the device ran (its conformance.json sets the counts)")
    args = ap.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text("utf-8"))
        conf = json.loads((Path(args.bundle) / "conformance.json").read_text("utf-8")) if args.bundle else None
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, s in (report.get("sections") or {}).items():
        print(f"{name:10s} " + (f"skipped ({s['skipped']})" if s.get("skipped") else f"{s.get('total', 0) - s.get('failed', 0)}/{s.get('total', 0)} passed"))
    problems = check_report(report, conf)
    for p in problems:
        print(f"FAIL {p}")
    print("device conformance: " + ("passed" if not problems else "FAILED"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
