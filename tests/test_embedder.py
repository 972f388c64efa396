"""The sentence embedder: seeded preset, ONNX export parity (with a negative control), bundle, retrieval."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from loop_fixtures import _CACHE, loop_bundle  # noqa: F401 (fixture)
from memlora.backends.onnx.export import export_encoder
from memlora.backends.onnx.runner import load_encoder
from memlora.core.bundle import sha256_file
from memlora.cli import app
from memlora.core.errors import MemloraError
from memlora.memory import MemoryStore
from memlora.runtime import open_bundle
from memlora.tasks.embedder import TextEmbedder, build_embedder_task, embedder_parity, write_embedder_preset

TEXTS = ["Caroline went to a LGBTQ support group.", "Melanie paints sunrises 🌅", "x",
         "Ünïcödé 中文 " * 80]  # the last is longer than max_length: truncated


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    task = build_embedder_task(write_embedder_preset(root / "preset"), {"preset": "tiny"})
    info = export_encoder(task, root / "onnx")
    onnx = TextEmbedder.from_file(task.tokenizer_file, load_encoder(root / "onnx" / info["files"]["model"]),
                                  task.max_length)
    return task, onnx, info, root


def test_preset_is_seeded(tmp_path, exported):
    _, _, _, root = exported
    again = write_embedder_preset(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256_file(again / name) == sha256_file(root / "preset" / name)


def test_onnx_parity_and_negative_control(exported):
    task, onnx, info, _ = exported
    ref = task.reference()
    a, b = onnx(TEXTS), ref(TEXTS)
    assert a.shape == (4, task.dim) == (4, 32) and a.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # negative control: a different input changes the embedding by far more than the tolerance
    other = onnx(["Caroline went to a LGBTQ support group!"])
    assert np.abs(other[0] - a[0]).max() > 1e-3
    report = embedder_parity(onnx, ref, TEXTS)
    assert report["passed"] and report["negative_control"] > 1e-3
    assert {"MatMul", "Softmax", "ReduceSum", "Sqrt"} <= set(info["ops"])


def test_padding_does_not_leak(exported):
    _, onnx, _, _ = exported
    batch = onnx(TEXTS)
    for i, t in enumerate(TEXTS):
        assert np.abs(onnx([t])[0] - batch[i]).max() <= 1e-5


def test_not_an_encoder_folder(tmp_path):
    with pytest.raises(MemloraError, match="not an encoder folder"):
        build_embedder_task(tmp_path)
    res = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "b"), "--embedder", str(tmp_path / "nope"),
                                   "--quiet"])
    assert res.exit_code == 2 and "not an encoder folder" in res.output
    assert not (tmp_path / "b").exists()


def test_bundle_embedder_and_vector_retrieval(loop_bundle):
    bundle, manifest = loop_bundle
    entry = manifest["embedder"]
    assert entry["parity"]["passed"] and entry["parity"]["max_abs_diff"] <= 1e-5
    assert (bundle / entry["files"]["onnx"]).is_file() and entry["source"] == {"preset": "tiny"}
    onnx = open_bundle(bundle, "onnx")
    try:
        ref_embed = _CACHE.get("torch_embedder")
        if ref_embed is None:
            from memlora.runtime import load_embedder

            ref_embed = load_embedder(bundle, manifest, "pytorch", [])
        assert np.abs(onnx.embedder(TEXTS) - ref_embed(TEXTS)).max() <= 1e-5
        store = MemoryStore(":memory:")
        from memlora.memory.parsing import Event, UpdateOp

        store.apply([UpdateOp(Event.ADD, None, t) for t in TEXTS[:3]], "u", onnx.embedder)
        assert all(m.has_embedding for m in store.list("u"))
        q = onnx.embedder([TEXTS[1]])[0]
        hits = store.search("unrelated words", "u", 3, q)
        assert hits[0].memory.text == TEXTS[1] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    finally:
        onnx.close()


def test_without_embedder_retrieval_is_bm25(loop_bundle):
    session = open_bundle(loop_bundle[0], "onnx", embedder=False)
    try:
        assert session.embedder is None and "FTS5/BM25" in session.describe()
        store = MemoryStore(":memory:")
        from memlora.memory.parsing import Event, UpdateOp

        store.apply([UpdateOp(Event.ADD, None, t) for t in TEXTS[:3]], "u")
        assert store.text_search == "fts5-bm25"
        assert [h.memory.text for h in store.search("support group", "u", 3)] == [TEXTS[0]]
    finally:
        session.close()
