"""ExecuTorch adapter programs kept resident (``Residency.ALL``): a switch selects a loaded,
warmed program and rewinds; it must give exactly what a freshly loaded program gives, with the
stale cache of an earlier, longer prompt never in view. ``ONE`` (one program at a time) is the
reference; the negative control is the other adapter's logits (non-zero adapters)."""
from __future__ import annotations

import numpy as np
import pytest

from memlora.core.config import Residency

LONG = [5, 17, 99, 230, 41, 7, 12, 88, 140, 3, 61, 62, 63, 64]
SHORT = [5, 17, 99, 201]
TOL = 1e-5


def _load(case, programs):
    from memlora.backends import get_backend

    return get_backend("executorch").load(case.artifact, case.root, programs=programs)


def _fresh(case, adapter, ids):
    """Logits of ``ids`` and of one decoded token from a program loaded just for this."""
    r = _load(case, Residency.ONE)
    try:
        r.set_adapter(adapter)
        rows = r.prefill(ids)
        return rows, r.decode(int(rows[-1].argmax()))
    finally:
        r.close()


def test_resident_switch_a_b_a_equals_fresh_programs(et_case, monkeypatch):
    case = et_case("tiny-qwen2")
    want_a, want_next = _fresh(case, "extract", SHORT)
    want_b, _ = _fresh(case, "update", SHORT)
    assert np.abs(want_a - want_b).max() > 100 * TOL  # negative control: the adapters differ

    r = _load(case, Residency.ALL)
    try:
        assert r.programs is Residency.ALL and set(r._resident) == {"extract", "update", "answer"}
        loads = []
        monkeypatch.setattr(r, "_load_program", lambda name: loads.append(name))  # a switch loads nothing
        r.set_adapter("extract")
        r.prefill(LONG)  # a longer prompt leaves stale entries past len(SHORT) in extract's cache
        for _ in range(3):
            r.decode(7)
        r.set_adapter("update")
        got_b = r.prefill(SHORT)
        r.set_adapter("extract")
        got_a = r.prefill(SHORT)
        got_next = r.decode(int(got_a[-1].argmax()))
        assert loads == []
        assert np.abs(got_b - want_b).max() <= TOL
        assert np.abs(got_a - want_a).max() <= TOL
        assert np.abs(got_next - want_next).max() <= TOL
        assert np.abs(got_a - want_b).max() > 100 * TOL
    finally:
        r.close()


def test_auto_residency(et_case, monkeypatch):
    """AUTO: every program of an external export when it fits in half the free memory, else one."""
    from memlora.backends.executorch import report, runner as et_runner

    case = et_case("tiny-qwen2")
    rt = et_runner._import_runtime()
    need = et_runner.resident_bytes(rt, case.artifact, case.root)
    foundation = (case.root / case.artifact.files["foundation"]).stat().st_size
    assert need > 3 * foundation  # three programs, each its packed copy of the base and planned outputs
    monkeypatch.setattr(report, "available_bytes", lambda: 2 * need)
    assert et_runner.choose_residency(Residency.AUTO, rt, case.artifact, case.root) is Residency.ALL
    monkeypatch.setattr(report, "available_bytes", lambda: 2 * need - 2)
    assert et_runner.choose_residency(Residency.AUTO, rt, case.artifact, case.root) is Residency.ONE
    assert et_runner.choose_residency(Residency.ALL, rt, case.artifact, case.root) is Residency.ALL
    r = _load(case, Residency.AUTO)
    try:
        assert r.programs is Residency.ONE and not r._resident
    finally:
        r.close()


@pytest.mark.parametrize("programs", ["all", "one"])
def test_residency_from_a_string(et_case, programs):
    r = _load(et_case("tiny-qwen2"), programs)
    try:
        assert r.programs is Residency(programs)
        assert bool(r._resident) is (programs == "all")
    finally:
        r.close()


def test_bench_worker_records_the_residency(et_case):
    """The bench's switch row says which residency it timed (AUTO is resolved by the runner)."""
    from memlora.bench.job import BenchJob
    from memlora.bench.worker import run_job

    case = et_case("tiny-qwen2")
    job = BenchJob(root=str(case.root), artifact=case.artifact.to_json(), adapters=["extract"],
                   switch_pair=["extract", "update"], prompt_lens=[4], decode_prompt_len=4, decode_tokens=2,
                   repeats=1, switch_repeats=1, vocab_size=64, threads=1, programs="one")
    res = run_job(job)
    assert res["programs"] == "one" and res["switch"]["switch_cost"]["n"] == 2
    assert run_job(job.but(programs="all"))["programs"] == "all"


def test_threads_go_to_xnnpack_and_openmp_stays_at_one(et_case):
    """``threads`` sizes XNNPACK's pool; the custom ops' OpenMP pool (libgomp through ATen) is held
    at one thread so it does not spin beside it on the same cores."""
    import torch

    from memlora.backends import get_backend

    case = et_case("tiny-qwen2")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        r = get_backend("executorch").load(case.artifact, case.root, threads=2, programs="one")
        try:
            assert r.threads == 2 and r._rt._threadpool_get_thread_count() == 2
            assert torch.get_num_threads() == 1
        finally:
            r.close()
    finally:
        torch.set_num_threads(before)


def test_mkl_held_at_one_thread_for_the_pool_threads(et_case):
    """custom_sdpa calls MKL from XNNPACK's pool threads, where ``torch.set_num_threads`` (MKL's
    count for the calling thread only) does not reach: the runner sets MKL's process-wide count.
    Read on a fresh thread, which has no count of its own, as a pool thread has none."""
    import ctypes
    import threading

    from memlora.backends import get_backend
    from memlora.backends.executorch.runner import libtorch_cpu

    lib = libtorch_cpu()
    getter = getattr(lib, "mkl_serv_get_max_threads", None)
    setter = getattr(lib, "mkl_serv_set_num_threads", None)
    if getter is None or setter is None:
        pytest.skip("this torch build carries no MKL (ARM or macOS): nothing to hold")
    getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]

    def on_fresh_thread() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(getter()))
        t.start()
        t.join()
        return seen[0]

    setter(2)
    assert on_fresh_thread() == 2  # the check can fail: two is what a pool thread would use
    case = et_case("tiny-qwen2")
    r = get_backend("executorch").load(case.artifact, case.root, threads=2, programs="one")
    try:
        assert on_fresh_thread() == 1
    finally:
        r.close()
