"""Check that the Swift core's tests read the shared app fixture exactly as the Kotlin core's do.

    python ios_demo/tools/check_fixture_fields.py FIXTURE_DIR [--android android_demo] [--ios ios_demo]

For each Kotlin file and its Swift counterpart (tests, test support, the conformance runner):

* the JSON keys read (``x["key"]`` subscripts) are the same set;
* the JSON keys written into compared objects (Kotlin ``"key" to``, Swift ``"key":`` / ``("key",``)
  are the same set;
* every test case has its counterpart (Kotlin ``@Test fun name`` <-> Swift ``func testName``);
* every key the fixture tests read exists in the regenerated fixture (``conversation.json`` and
  ``conformance.json`` in FIXTURE_DIR), and the LoCoMo test's keys in the dump tool's source.

Also, for the two places where a literal decides behaviour, the same literals on both sides: the
store's SQL (schema, FTS5 triggers, queries) and the chat formats' markup and markers.

One fixture format for both apps: a field renamed on one side, or a case dropped, fails here.
Prints one line per problem and ``N passed, M failed`` (one check per file pair and fixture).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

KT_TEST = "core/src/test/kotlin/memlora/core"
KT_MAIN = "core/src/main/kotlin/memlora/core"
SW_TEST = "MemLoRAKit/Tests/MemLoRAKitTests"
SW_MAIN = "MemLoRAKit/Sources/MemLoRAKit"

# (Kotlin file, Swift file, whose keys must exist in the fixture)
PAIRS = [
    (f"{KT_TEST}/FixtureTest.kt", f"{SW_TEST}/FixtureTests.swift", "fixture"),
    (f"{KT_TEST}/ConformanceTest.kt", f"{SW_TEST}/ConformanceTests.swift", "fixture"),
    (f"{KT_MAIN}/Conformance.kt", f"{SW_MAIN}/Conformance.swift", "fixture"),
    (f"{KT_TEST}/LocomoTest.kt", f"{SW_TEST}/LocomoTests.swift", "pystore"),
    (f"{KT_TEST}/Support.kt", f"{SW_TEST}/Support.swift", None),
    (f"{KT_TEST}/BadInputTest.kt", f"{SW_TEST}/BadInputTests.swift", None),
    (f"{KT_TEST}/JsonTest.kt", f"{SW_TEST}/JSONTests.swift", None),
]
# Kotlin test name -> Swift test name where the platforms differ on purpose.
ALIASES = {"orgJsonIsLenient": "foundationJsonDiffers"}

# a subscript (after a name, call or optional), not an array literal; `x["k"] = v` is a write
_SUB = r'(?<=[\w)\]?!])\[\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\]'
_READ = re.compile(_SUB + r'(?!\s*=[^=])')
_SUB_WRITE = re.compile(_SUB + r'(?=\s*=[^=])')
_KT_WRITE = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s+to\b')
# dictionary-literal keys, and (key, value) pairs in a list: `[("op", ...), ("id", ...)]`
_SW_WRITE = re.compile(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:(?!:)|(?:\[|\),)\s*\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*,')
_KT_TEST = re.compile(r"@Test\s+fun\s+([A-Za-z0-9_]+)")
_SW_TEST = re.compile(r"func\s+test([A-Za-z0-9_]+)\s*\(")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def _code(path: Path) -> str:
    return _COMMENT.sub("", path.read_text(encoding="utf-8"))


def _keys(found) -> set[str]:
    """Drop environment / system property names (MEMLORA_*): test inputs, not JSON fields."""
    return {k for k in found if not k.startswith("MEMLORA_")}


def reads(src: str) -> set[str]:
    return _keys(_READ.findall(src))


def kotlin_writes(src: str) -> set[str]:
    return _keys(_KT_WRITE.findall(src)) | _keys(_SUB_WRITE.findall(src))


def swift_writes(src: str) -> set[str]:
    return _keys(a or b for a, b in _SW_WRITE.findall(src)) | _keys(_SUB_WRITE.findall(src))


def kotlin_tests(src: str) -> set[str]:
    return set(_KT_TEST.findall(src))


def swift_tests(src: str) -> set[str]:
    return {n[0].lower() + n[1:] for n in _SW_TEST.findall(src)}


def json_keys(value, out: set[str] | None = None) -> set[str]:
    out = set() if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            json_keys(v, out)
    elif isinstance(value, list):
        for v in value:
            json_keys(v, out)
    return out


_LIT = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_INTERP = re.compile(r'\$\{[^}]*\}|\$[A-Za-z_]\w*|\\\((?:[^()]|\([^()]*\))*\)')
_SQL = re.compile(r"\b(SELECT|INSERT|CREATE|UPDATE|DELETE FROM|PRAGMA|ORDER BY|WHERE|MATCH|LIMIT|JOIN)\b")
_CHAT = re.compile(r"^<|\{role\}|\{content\}")
CONSTANTS = [  # (Kotlin file, Swift file, which literals)
    (f"{KT_MAIN}/Store.kt", f"{SW_MAIN}/Store.swift", _SQL),
    (f"{KT_MAIN}/Chat.kt", f"{SW_MAIN}/Chat.swift", _CHAT),
]


def literals(src: str, pattern: re.Pattern) -> list[str]:
    """String literals matching ``pattern`` (or continuing SQL on a new line), interpolations
    written as ``@`` and a leading one dropped (Kotlin ``"$sql ORDER BY"`` = Swift ``sql + " ORDER BY"``)."""
    out = []
    for lit in _LIT.findall(src):
        if pattern.search(lit) or (pattern is _SQL and lit.startswith(" ")):
            norm = _INTERP.sub("@", lit)
            out.append(norm[1:] if norm.startswith("@ ") else norm)
    return sorted(out)


def check(fixture: Path, android: Path, ios: Path, bundle: Path | None = None) -> tuple[int, list[str]]:
    """(checks passed, problems)."""
    problems: list[str] = []
    passed = 0
    have: set[str] = set()
    also: set[str] = swift_writes(_code(ios / f"{SW_MAIN}/Conformance.swift"))  # the report's own keys
    if bundle is not None and (bundle / "manifest.json").is_file():
        json_keys(json.loads((bundle / "manifest.json").read_text(encoding="utf-8")), also)
    for name in ("conversation.json", "conformance.json"):
        f = fixture / name
        if not f.is_file():
            problems.append(f"{f}: missing (python -m memlora.app_fixture {fixture} --bundle BUNDLE)")
        else:
            json_keys(json.loads(f.read_text(encoding="utf-8")), have)
    tool = android / "tools/python_locomo_store.py"
    pystore = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', tool.read_text(encoding="utf-8"))) if tool.is_file() else set()
    for kt_rel, sw_rel, source in PAIRS:
        kt, sw = android / kt_rel, ios / sw_rel
        if not kt.is_file() or not sw.is_file():
            problems.append(f"missing {kt if not kt.is_file() else sw}")
            continue
        k, s = _code(kt), _code(sw)
        bad = []
        for what, a, b in (("reads", reads(k), reads(s)), ("writes", kotlin_writes(k), swift_writes(s))):
            if a != b:
                bad.append(f"{sw.name} vs {kt.name}: {what} differ: only Kotlin {sorted(a - b)}, only Swift {sorted(b - a)}")
        want = {ALIASES.get(t, t) for t in kotlin_tests(k)}
        got = swift_tests(s)
        if want != got:
            bad.append(f"{sw.name} vs {kt.name}: test cases differ: only Kotlin {sorted(want - got)}, only Swift {sorted(got - want)}")
        if source == "fixture" and have:
            missing = reads(s) - have - also
            if missing:
                bad.append(f"{sw.name}: reads keys the regenerated fixture does not have: {sorted(missing)}")
        if source == "pystore" and pystore:
            missing = reads(s) - pystore
            if missing:
                bad.append(f"{sw.name}: reads keys {tool.name} does not write: {sorted(missing)}")
        if bad:
            problems.extend(bad)
        else:
            passed += 1
    for kt_rel, sw_rel, pattern in CONSTANTS:
        kt, sw = android / kt_rel, ios / sw_rel
        a, b = literals(_code(kt), pattern), literals(_code(sw), pattern)
        if a != b:
            problems.append(f"{sw.name} vs {kt.name}: literals differ: only Kotlin {[x for x in a if x not in b]},"
                            f" only Swift {[x for x in b if x not in a]}")
        else:
            passed += 1
    return passed, problems


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fixture", type=Path)
    ap.add_argument("--android", type=Path, default=here.parent / "android_demo")
    ap.add_argument("--ios", type=Path, default=here)
    ap.add_argument("--bundle", type=Path, help="the bundle the fixture came from (manifest keys the tests read)")
    a = ap.parse_args(argv)
    passed, problems = check(a.fixture, a.android, a.ios, a.bundle)
    for p in problems:
        print(f"FAIL {p}")
    total = len(PAIRS) + len(CONSTANTS)
    print(f"fixture fields and literals (Swift vs Kotlin, {total} file pairs): {passed} passed, {total - passed} failed")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
