"""Fail if any Swift file under the given folders does not parse (tree-sitter-swift grammar).

    python ios_demo/tools/check_swift_syntax.py ios_demo/MemLoRAKit ios_demo/App

There is no Swift toolchain on the CI machine: this catches a syntax slip (not a type error).
Prints path:line:col for each error and a closing line ``N passed, M failed``.
"""
from __future__ import annotations

import sys
from pathlib import Path


def _parser():
    import tree_sitter_swift
    from tree_sitter import Language, Parser

    lang = Language(tree_sitter_swift.language())
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


def check(files: list[Path]) -> tuple[int, list[str]]:
    """(files that parse, error lines)."""
    parser = _parser()
    ok, lines = 0, []
    for f in files:
        src = f.read_bytes()
        errs = errors(parser.parse(src))
        if not errs:
            ok += 1
            continue
        for n in errs[:3]:
            text = src[n.start_byte:n.end_byte].decode("utf-8", "replace").splitlines()
            what = "missing " + n.type if n.is_missing else repr((text[0] if text else "")[:60])
            lines.append(f"{f}:{n.start_point[0] + 1}:{n.start_point[1] + 1}: syntax error near {what}")
    return ok, lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    files = sorted(p for d in argv for p in Path(d).rglob("*.swift") if ".build" not in p.parts)
    if not files:
        print(f"error: no .swift files under {', '.join(argv)}", file=sys.stderr)
        return 2
    ok, lines = check(files)
    for line in lines:
        print(line)
    print(f"swift syntax (tree-sitter-swift): {ok} passed, {len(files) - ok} failed")
    return 0 if ok == len(files) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
