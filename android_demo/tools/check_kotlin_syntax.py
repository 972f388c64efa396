"""Fail if any Kotlin file under the given folders does not parse (tree-sitter-kotlin grammar).

    python android_demo/tools/check_kotlin_syntax.py android_demo/app [android_demo/core ...]

The app cannot be compiled without the Android SDK; this catches a syntax slip (not a type error)
in CI. Prints one line per file with an error (path:line:col and the offending text) and a summary.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _parser():
    import tree_sitter_kotlin
    from tree_sitter import Language, Parser

    lang = Language(tree_sitter_kotlin.language())
    try:
        return Parser(lang)
    except TypeError:  # tree-sitter < 0.22
        p = Parser()
        p.set_language(lang)
        return p


def errors(tree) -> list:
    """ERROR and MISSING nodes, outermost first."""
    out, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            out.append(node)
            continue
        if node.has_error:
            stack.extend(reversed(node.children))
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    parser = _parser()
    files = sorted(p for d in argv for p in Path(d).rglob("*.kt"))
    if not files:
        print(f"error: no .kt files under {', '.join(argv)}", file=sys.stderr)
        return 2
    bad = 0
    for f in files:
        src = f.read_bytes()
        errs = errors(parser.parse(src))
        if errs:
            bad += 1
            for n in errs[:3]:
                text = src[n.start_byte:n.end_byte].decode("utf-8", "replace").splitlines()
                what = "missing " + n.type if n.is_missing else repr((text[0] if text else "")[:60])
                print(f"{f}:{n.start_point[0] + 1}:{n.start_point[1] + 1}: syntax error near {what}")
    print(f"kotlin syntax: {len(files) - bad}/{len(files)} files parse")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
