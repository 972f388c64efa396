"""benchmarks/run_suite.py merge_bundles: parts with different files under one path are refused
(the merged bundle would otherwise run the first part's file for both artifacts)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import artifact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_merge_refuses_two_files_under_one_path(onnx_fp32_bundle, tmp_path):
    from run_suite import merge_bundles

    from memlora.core.bundle import read_manifest, verify_files, write_manifest

    root, manifest = onnx_fp32_bundle
    same, changed = tmp_path / "same", tmp_path / "changed"
    shutil.copytree(root, same)
    shutil.copytree(root, changed)
    merged = merge_bundles(tmp_path / "ok", [root, same])  # identical files: one link each
    assert verify_files(merged, read_manifest(merged)) == []

    target = changed / artifact(manifest, "onnx", "external")["files"]["adapter:update"]
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    write_manifest(changed, read_manifest(changed))  # a valid bundle of its own, other bytes
    with pytest.raises(ValueError, match="update.onnx_adapter differs"):
        merge_bundles(tmp_path / "bad", [root, changed])


def test_merge_keeps_first_parts_bundle_files(onnx_fp32_bundle, tmp_path):
    """A fused part exported for the timed adapter only has its own conformance.json (fewer greedy
    vectors): the first part's copy, which covers that adapter, is kept. A later part naming an
    adapter the first part lacks is refused."""
    import json

    from run_suite import merge_bundles

    from memlora.core.bundle import read_manifest, verify_files, write_manifest

    root, _ = onnx_fp32_bundle
    narrow = tmp_path / "narrow"
    shutil.copytree(root, narrow)
    conf = narrow / "conformance.json"
    doc = json.loads(conf.read_text())
    doc["greedy"] = [g for g in doc["greedy"] if g["adapter"] == "extract"]
    conf.write_text(json.dumps(doc))
    write_manifest(narrow, read_manifest(narrow))
    merged = merge_bundles(tmp_path / "ok", [root, narrow])
    assert (merged / "conformance.json").read_bytes() == (root / "conformance.json").read_bytes()
    assert verify_files(merged, read_manifest(merged)) == []

    fewer = tmp_path / "fewer"  # a first part without 'answer' cannot vouch for the other's vectors
    shutil.copytree(root, fewer)
    m = read_manifest(fewer)
    m["adapters"] = [a for a in m["adapters"] if a["name"] != "answer"]
    write_manifest(fewer, m)
    with pytest.raises(ValueError, match="conformance.json differs"):
        merge_bundles(tmp_path / "bad", [fewer, narrow])
