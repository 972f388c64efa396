"""Fail if any app source file does not parse (tree-sitter grammars from PyPI).

    python -m memlora.syntax_check kotlin android_demo/app android_demo/core
    python -m memlora.syntax_check swift ios_demo/MemLoRAKit ios_demo/App

Neither the Android SDK nor a Swift toolchain is on the CI machine: this catches a syntax slip
(not a type error) in the app code that cannot be compiled here. Prints ``path:line:col`` for each
error and a closing line ``<lang> syntax (tree-sitter-<lang>): N passed, M failed``.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

SUFFIX = {"kotlin": ".kt", "swift": ".swift"}


def _parser(lang: str):
    from tree_sitter import Language, Parser

    grammar = Language(importlib.import_module(f"tree_sitter_{lang}").language())
    try:
        return Parser(grammar)
    except TypeError:  # tree-sitter < 0.22
        p = Parser()
        p.set_language(grammar)
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


def check(lang: str, files: list[Path]) -> tuple[int, list[str]]:
    """(files that parse, one error line per problem, at most three per file)."""
    parser = _parser(lang)
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
    if len(argv) < 2 or argv[0] not in SUFFIX:
        print(f"error: usage: python -m memlora.syntax_check {{{','.join(SUFFIX)}}} FOLDER... -- fix: name a "
              "language and the folders to check", file=sys.stderr)
        return 2
    lang, dirs = argv[0], argv[1:]
    files = sorted(p for d in dirs for p in Path(d).rglob(f"*{SUFFIX[lang]}") if ".build" not in p.parts)
    if not files:
        print(f"error: no {SUFFIX[lang]} files under {', '.join(dirs)} -- fix: pass the app's source folders",
              file=sys.stderr)
        return 2
    ok, lines = check(lang, files)
    for line in lines:
        print(line)
    print(f"{lang} syntax (tree-sitter-{lang}): {ok} passed, {len(files) - ok} failed")
    return 0 if ok == len(files) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
