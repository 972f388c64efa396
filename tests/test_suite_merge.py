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
