"""The checks ios_demo/ci.sh runs where no Swift toolchain exists: every .swift file parses
(tree-sitter-swift), and the Swift tests read the shared fixture as the Kotlin tests do. Fast: the
fixture's conformance.json is built from fakes here (ios_demo/ci.sh uses a freshly exported bundle)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ios_demo" / "tools"))


class _Enc:
    def __init__(self, ids):
        self.ids = ids


class _FakeTokenizer:
    def encode(self, text, add_special_tokens=False):
        return _Enc([ord(c) % 50 for c in text])

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(97 + i % 26) for i in ids)


class _FakeRunner:
    adapters = ["extract", "update", "answer"]

    def set_adapter(self, name):
        pass

    def prefill(self, ids):
        return np.zeros((len(ids), 8), np.float32)

    def decode(self, tok):
        return np.zeros(8, np.float32)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    from memlora import app_fixture
    from memlora.conformance import build_conformance
    from memlora.memory import load_templates

    out = tmp_path_factory.mktemp("ios-fixture")
    app_fixture.write_fixture(out)
    doc = build_conformance(_FakeTokenizer(), "chatml", load_templates(), _FakeRunner(), _FakeRunner.adapters, 4)
    (out / "conformance.json").write_text(json.dumps(doc), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    """A stand-in bundle folder: only the manifest keys the tests read (exporter versions)."""
    from memlora.core.bundle import exporter_versions

    out = tmp_path_factory.mktemp("ios-bundle")
    (out / "manifest.json").write_text(json.dumps({"format": "memlora-bundle", "exporter": exporter_versions()}))
    return out


def test_every_swift_file_parses_and_a_slip_fails(tmp_path):
    pytest.importorskip("tree_sitter_swift")
    from memlora.syntax_check import check

    files = sorted((ROOT / "ios_demo").rglob("*.swift"))
    ok, problems = check("swift", files)
    assert ok == len(files) >= 28 and not problems
    bad = tmp_path / "Bad.swift"
    bad.write_text("func f( {\n  let x = \n}\n", encoding="utf-8")
    assert check("swift", [bad])[0] == 0


def test_swift_tests_read_the_fixture_as_the_kotlin_tests(fixture_dir, manifest_dir, tmp_path):
    import check_fixture_fields as c

    passed, problems = c.check(fixture_dir, ROOT / "android_demo", ROOT / "ios_demo", manifest_dir)
    assert problems == [] and passed == len(c.PAIRS) + len(c.CONSTANTS)
    # a field renamed on the Swift side, a dropped case, a changed SQL literal: each fails
    ios = tmp_path / "ios_demo"
    shutil.copytree(ROOT / "ios_demo", ios, ignore=shutil.ignore_patterns(".build", "*.xcodeproj"))
    tests = ios / "MemLoRAKit/Tests/MemLoRAKitTests"
    (tests / "FixtureTests.swift").write_text(
        (tests / "FixtureTests.swift").read_text().replace('step["raw_fallback"]', 'step["rawFallback"]'))
    (tests / "JSONTests.swift").write_text((tests / "JSONTests.swift").read_text().replace("func testPythonStrings", "func helper"))
    store = ios / "MemLoRAKit/Sources/MemLoRAKit/Store.swift"
    store.write_text(store.read_text().replace("ORDER BY bm25(memories_fts), m.seq", "ORDER BY bm25(memories_fts)"))
    _, problems = c.check(fixture_dir, ROOT / "android_demo", ios, manifest_dir)
    text = "\n".join(problems)
    assert "rawFallback" in text and "pythonStrings" in text and "Store.swift vs Store.kt" in text
