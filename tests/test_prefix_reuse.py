"""Prefix KV reuse (RunnerBase.prefill_with_prefix), once for every backend that runs here.

One chain per backend: a full prefill of head + tail is the reference; a first turn keeps the head's
cache and leaves a longer stale tail (and decoded tokens) behind; another adapter keeps its own
head; the next turn under the first adapter restores the head and prefills a shorter tail. Its
logits must equal the reference, and so must the decode after it. Negative controls: the same tail
without the rewind (the stale entries in view) and, for a growing cache, a rewind that only moves
the position must both miss the reference by far more than the tolerance. A runner that returns
only the last position's logits (ExecuTorch) is compared on that row (``_after``).
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import artifact as manifest_artifact

from memlora.backends import availability, get_backend
from memlora.backends.base import Artifact
from memlora.core.config import Residency
from memlora.core.errors import MemloraError

HEAD = [5, 17, 99, 230, 41, 7, 12, 88, 140, 3]
LONG = [61, 62, 63, 64, 65, 66, 67, 68]
SHORT = [201, 202, 203]
TOL = 1e-4


@pytest.fixture(params=["pytorch", "onnx", "onnx-fused", "executorch", "executorch-one", "coreml"])
def runner(request, onnx_fp32_bundle, preset_dir):
    name = request.param
    if name == "pytorch":
        from memlora.backends.pytorch import reference_runner

        model_dir, dirs = preset_dir("tiny-qwen2")
        r = reference_runner(model_dir, dirs, "eager")
    else:
        backend = name.split("-")[0]
        reason = availability().get(backend)
        if reason:
            pytest.skip(reason)
        if backend == "onnx":
            root, manifest = onnx_fp32_bundle
            mode = "fused" if name.endswith("fused") else "external"
            art = Artifact.from_json(manifest_artifact(manifest, "onnx", mode))
        elif backend == "executorch":
            case = request.getfixturevalue("et_case")("tiny-qwen2")
            art, root = case.artifact, case.root
            # every adapter's program resident (a switch selects one), or one at a time (reloads)
            programs = Residency.ONE if name.endswith("one") else Residency.ALL
            r = get_backend(backend).load(art, root, programs=programs)
        else:
            root, art = request.getfixturevalue("coreml_export")("tiny-qwen2")
        if backend != "executorch":
            r = get_backend(backend).load(art, root)
    yield r
    r.close()


def _full(runner, adapter, ids):
    runner.set_adapter(adapter)
    rows = runner.prefill(ids)
    return rows, runner.decode(int(rows[-1].argmax()))


def _after(runner, rows, n):
    """The rows of a full prefill a prefill of its last ids returns: those after the first ``n``,
    or the last one where the runner returns only the last position's."""
    return rows[n:] if runner.returns_all_positions else rows[-1:]


def test_prefix_reuse_equals_a_full_prefill(runner):
    ref_rows, ref_next = _full(runner, "extract", HEAD + SHORT)
    other_rows, _ = _full(runner, "update", HEAD + SHORT)

    # turn 1 under extract: the head is prefilled and kept; a longer tail and 4 tokens follow it.
    runner.set_adapter("extract")
    rows, reused = runner.prefill_with_prefix(HEAD + LONG, len(HEAD))
    assert reused == 0 and rows.shape[0] == (len(LONG) if runner.returns_all_positions else 1)
    for _ in range(4):
        runner.decode(int(rows[-1].argmax()))
    # another adapter keeps its own head (never extract's)
    runner.set_adapter("update")
    runner.prefill_with_prefix(HEAD + LONG, len(HEAD))
    runner.set_adapter("update")
    rows, reused = runner.prefill_with_prefix(HEAD + SHORT, len(HEAD))
    assert reused == len(HEAD)
    assert np.abs(rows - _after(runner, other_rows, len(HEAD))).max() <= TOL

    # turn 2 under extract: restored head + a shorter tail == the full prefill, stale tail unseen.
    runner.set_adapter("extract")
    rows, reused = runner.prefill_with_prefix(HEAD + SHORT, len(HEAD))
    assert reused == len(HEAD) and runner.pos == len(HEAD + SHORT)
    diff = np.abs(rows - _after(runner, ref_rows, len(HEAD))).max()
    assert diff <= TOL, diff
    assert np.abs(runner.decode(int(rows[-1].argmax())) - ref_next).max() <= TOL
    assert runner.prefix_stats == {"hits": 2, "misses": 2, "reused_tokens": 2 * len(HEAD)}

    # negative control 1: the same tail on top of the stale turn (no rewind) misses by far more.
    leaked = runner.prefill(SHORT)
    assert np.abs(leaked - _after(runner, ref_rows, len(HEAD))).max() > 100 * TOL

    # a changed head (template change) is not reused: prefilled again, then reused.
    head2 = HEAD[:-1] + [4]
    runner.set_adapter("extract")
    _, reused = runner.prefill_with_prefix(head2 + SHORT, len(head2))
    assert reused == 0
    runner.set_adapter("extract")
    rows2, reused = runner.prefill_with_prefix(head2 + SHORT, len(head2))
    assert reused == len(head2)
    ref2, _ = _full(runner, "extract", head2 + SHORT)
    assert np.abs(rows2 - _after(runner, ref2, len(head2))).max() <= TOL


def test_rewind_forgets_what_follows(runner):
    ref_rows, _ = _full(runner, "extract", HEAD + SHORT)
    runner.set_adapter("extract")
    runner.prefill(HEAD + LONG)
    runner.rewind(len(HEAD))
    assert runner.pos == len(HEAD) and runner.tokens == HEAD
    assert np.abs(runner.prefill(SHORT) - _after(runner, ref_rows, len(HEAD))).max() <= TOL
    with pytest.raises(MemloraError, match="cannot rewind to 99"):
        runner.rewind(99)
    if type(runner).__name__ in ("TorchRunner", "OnnxRunner"):
        # negative control 2: a growing cache rewound by position only keeps the stale entries.
        runner.set_adapter("extract")
        runner.prefill(HEAD + LONG)
        runner._rewind = lambda n: None
        runner.rewind(len(HEAD))
        assert np.abs(runner.prefill(SHORT) - _after(runner, ref_rows, len(HEAD))).max() > 100 * TOL


def test_prefill_last_is_the_last_row_and_the_same_cache(preset_dir):
    """The PyTorch reference computes the LM head on the last position only (the conformance
    vectors' greedy prefill): the same row as a full prefill, the same cache after it; the row
    before it (the negative control) differs."""
    import numpy as np

    from memlora.backends.pytorch import reference_runner

    model_dir, adapters = preset_dir("tiny-qwen2")
    runner = reference_runner(model_dir, adapters)
    ids = list(range(5, 29))
    full = runner.prefill(ids)
    after = runner.decode(7)
    runner.reset()
    last = runner.prefill_last(ids)
    assert last.shape == (full.shape[1],) and runner.pos == len(ids) and runner.tokens == ids
    np.testing.assert_allclose(last, full[-1], rtol=1e-5, atol=1e-5)
    assert float(np.abs(last - full[-2]).max()) > 1e-2
    np.testing.assert_allclose(runner.decode(7), after, rtol=1e-5, atol=1e-5)
    runner.close()
