"""The Python side of android_demo/: the JSON-lines host engine, the shared app fixture, the
exporter versions in the manifest. Fast: no model is exported here (android_demo/ci.sh runs the
whole chain against a fresh bundle)."""
from __future__ import annotations

import io
import json

from memlora import app_fixture, serve
from memlora.core.bundle import exporter_versions


def test_fixture_is_deterministic_and_covers_every_event():
    a, b = app_fixture.build_fixture(), app_fixture.build_fixture()
    assert json.dumps(a) == json.dumps(b)  # memory ids are replaced by m1, m2, ...
    events = {(h["event"], h["actor"]) for h in a["expected_store"]["history"]}
    assert {("ADD", "loop"), ("UPDATE", "loop"), ("DELETE", "loop"), ("ADD", "fallback")} <= events
    assert sum(s["expected"].get("n_errors", 0) for s in a["steps"]) >= 5
    calls = [c for s in a["steps"] for c in s["expected"]["calls"]]
    assert len(calls) == sum(len(s["outputs"]) for s in a["steps"])
    assert all("<|im_start|>system" not in c["prompt"].split("<|im_start|>user", 1)[-1] for c in calls)


def test_write_fixture(tmp_path):
    paths = app_fixture.write_fixture(tmp_path / "fx")
    names = sorted(p.relative_to(tmp_path / "fx").as_posix() for p in paths)
    assert names == ["conversation.json", "prompts/answer.txt", "prompts/extract.txt", "prompts/update.txt"]


def test_serve_refuses_a_non_bundle_in_one_protocol_line(tmp_path):
    out = io.StringIO()
    assert serve.serve(str(tmp_path), stdin=io.StringIO(""), stdout=out) == 2
    line = json.loads(out.getvalue())
    assert line["ready"] is False and "manifest.json" in line["error"]


def test_exporter_versions_name_the_runtimes():
    v = exporter_versions()
    assert {"memlora", "executorch", "onnxruntime", "coremltools"} <= set(v)


def test_device_report_cannot_pass_by_skipping():
    from memlora.device_report import check_report

    ok = {"format": "memlora-conformance-report", "sections": {
        "prompts": {"total": 6, "failed": 0, "passed": True}, "parse": {"total": 19, "failed": 0, "passed": True},
        "greedy": {"total": 3, "failed": 0, "passed": True},
        "tokenizer": {"total": 0, "failed": 0, "passed": True, "skipped": "engine does not expose its tokenizer"}}}
    conf = {"prompts": [0] * 6, "parse": [0] * 19, "greedy": [0] * 3}
    assert check_report(ok, conf) == []
    skipped = json.loads(json.dumps(ok))
    skipped["sections"]["greedy"] = {"total": 0, "failed": 0, "passed": True, "skipped": "no engine"}
    assert any("greedy: did not run" in p for p in check_report(skipped, conf))
    short = json.loads(json.dumps(ok))
    short["sections"]["parse"]["total"] = 3
    assert any("parse: ran 3 checks" in p for p in check_report(short, conf))
    failed = json.loads(json.dumps(ok))
    failed["sections"]["prompts"].update(failed=1, passed=False, failures=["prompts[0]"])
    assert check_report(failed, conf)


def test_every_kotlin_file_parses_and_a_slip_fails(tmp_path):
    from pathlib import Path

    from memlora.syntax_check import check, main

    root = Path(__file__).resolve().parent.parent / "android_demo"
    files = sorted(root.rglob("*.kt"))
    ok, problems = check("kotlin", files)
    assert ok == len(files) >= 24 and not problems
    bad = tmp_path / "Bad.kt"
    bad.write_text("fun f( {\n  val x = \n}\n", encoding="utf-8")
    assert check("kotlin", [bad])[0] == 0 and main(["kotlin", str(tmp_path)]) == 1
    assert main(["cobol", str(tmp_path)]) == 2
