"""ExecuTorch text programs compute the final norm and LM head on the last position only
(``logits [1, 1, vocab]``), as ExecuTorch's own llama export does: a ``[1, T, vocab]`` output is
memory-planned at the largest T, a zero-filled ``[max_seq_len, vocab]`` fp32 buffer per loaded
program. Checked: the program's output and the runner's rows against the reference's last row,
the planned memory, old bundles (full logits) still read as such, and parity over the rows the
export returns (it passes, and still fails for a wrong adapter or a shape last-only does not explain).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from et_fixtures import MAX_SEQ_LEN, PARITY_TOKENS  # et_case: a conftest fixture

from memlora.parity import check_parity

IDS = [5, 17, 99, 230, 41, 7, 12, 88]
TOL = 1e-4


class _Wrapped:
    """A runner seen through a change: adapters renamed on ``set_adapter`` (a wrong program), or
    prefill rows cut to the last with ``returns_all_positions`` as given."""

    def __init__(self, runner, swap: dict | None = None, last_only: bool = False, claims_all: bool | None = None):
        self.r, self.swap, self.last_only = runner, swap or {}, last_only
        self.returns_all_positions = runner.returns_all_positions if claims_all is None else claims_all

    def __getattr__(self, name):
        return getattr(self.r, name)

    def set_adapter(self, name):
        self.r.set_adapter(self.swap.get(name, name))

    def prefill(self, ids):
        rows = self.r.prefill(ids)
        return rows[-1:] if self.last_only else rows


def _reference(case):
    from memlora.backends.pytorch import reference_runner

    return reference_runner(case.src.info.path, case.src.adapter_dirs, case.src.info.family.attn_implementation)


def test_program_and_runner_return_the_last_row(et_case):
    import torch

    from memlora.backends.executorch.runner import _import_runtime

    case = et_case("tiny-qwen2")
    art = case.artifact
    assert art.meta["logits"] == "last"
    ref = _reference(case)
    ref.set_adapter("extract")
    want = ref.prefill(IDS)
    want_next = ref.decode(int(want[-1].argmax()))
    ref.close()
    files = {role: str(case.root / rel) for role, rel in art.files.items()}
    program = _import_runtime()._load_for_executorch(files["adapter:extract"], data_path=files["foundation"])
    out = program.forward([torch.tensor([IDS], dtype=torch.long), torch.tensor([0], dtype=torch.long)])[0]
    assert tuple(out.shape) == (1, 1, want.shape[1])
    assert np.abs(out[0].float().numpy() - want[-1:]).max() <= TOL
    r = case.runner()
    try:
        assert r.returns_all_positions is False
        r.set_adapter("extract")
        got = r.prefill(IDS)
        assert got.shape == (1, want.shape[1]) and got.dtype == np.float32
        assert np.abs(got - want[-1:]).max() <= TOL
        assert np.abs(r.decode(int(got[-1].argmax())) - want_next).max() <= TOL
    finally:
        r.close()


def test_planned_memory_is_below_a_full_logits_buffer(et_case):
    """Every program's memory-planned buffers (outputs, activations and the K/V cache) together
    stay under what the ``[1, max_seq_len - 1, vocab]`` fp32 output of a full-logits program
    needs alone (there the output is planned in the same buffers, so they are at least that)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from memlora.backends.executorch.runner import _import_runtime

    case = et_case("tiny-qwen2")
    art = case.artifact
    vocab = art.meta["runner_metadata"]["get_vocab_size"]
    full_logits = (MAX_SEQ_LEN - 1) * vocab * 4
    rt = _import_runtime()
    for name in art.adapters:
        pte = case.root / art.files[f"adapter:{name}"]
        meta = rt._load_program(str(pte)).method_meta("forward")
        if hasattr(meta, "num_memory_planned_buffers"):  # newer pybindings say it themselves
            planned = sum(meta.memory_planned_buffer_size(i) for i in range(meta.num_memory_planned_buffers()))
        else:  # executorch 1.4.1: read the execution plan's buffer sizes from the file
            planned = sum(deserialize_pte_binary(pte.read_bytes()).program.execution_plan[0].non_const_buffer_sizes)
        assert 0 < planned < full_logits, (name, planned, full_logits)
        logits = meta.output_tensor_meta(0)
        assert tuple(logits.sizes()) == (1, 1, vocab) and logits.nbytes() == vocab * 4


def test_parity_compares_the_rows_the_export_returns(et_case):
    par = et_case("tiny-qwen2").parity
    assert par["passed"], par
    assert par["prompt_positions"] == "last"
    for row in par["adapters"]:
        assert row["tokens_compared"] == 2 * PARITY_TOKENS and row["max_abs_diff"] <= TOL
        control = row["negative_control"]  # the other adapter's last prompt row vs the export's
        assert control["max_abs_diff"] >= control["required"] > 0, row


def test_parity_fails_for_a_wrong_adapter_and_an_unexplained_shape(et_case):
    case = et_case("tiny-qwen2")
    ref = _reference(case)
    prompts = case.prompts[:1]
    r = case.runner()
    try:
        wrong = check_parity(_Wrapped(r, swap={"extract": "update"}), ref, prompts, backend="executorch",
                             n_tokens=4, adapters=["extract"])
        assert not wrong["passed"] and any("max |logit diff|" in f for f in wrong["adapters"][0]["failures"])
        # one row from a runner that says it returns every position: a shape failure, not a pass
        lying = check_parity(_Wrapped(r, claims_all=True), ref, prompts, backend="executorch", n_tokens=4,
                             adapters=["extract"])
        assert not lying["passed"] and "logits shape" in lying["adapters"][0]["failures"][0]
    finally:
        r.close()
        ref.close()


def test_a_bundle_without_the_logits_key_returns_every_position(et_case):
    """Bundles written before last-position logits have no ``meta["logits"]``: full rows."""
    from memlora.backends import get_backend

    case = et_case("tiny-qwen2")
    old = dataclasses.replace(case.artifact, meta={k: v for k, v in case.artifact.meta.items() if k != "logits"})
    r = get_backend("executorch").load(old, case.root, programs="one")
    try:
        assert r.returns_all_positions is True
    finally:
        r.close()


def test_parity_of_a_last_only_runner_without_executorch(preset_dir):
    """The comparison itself, on the PyTorch reference cut to its last prompt row: passes when the
    runner says so, fails on the shape when it claims every position."""
    from memlora.backends.pytorch import reference_runner

    model_dir, dirs = preset_dir("tiny-qwen2")
    ref, other = reference_runner(model_dir, dirs, "eager"), reference_runner(model_dir, dirs, "eager")
    try:
        prompts = [IDS, IDS[:3]]
        par = check_parity(_Wrapped(other, last_only=True, claims_all=False), ref, prompts, backend="pytorch",
                           n_tokens=4)
        assert par["passed"] and par["prompt_positions"] == "last", par
        assert all(row["tokens_compared"] == 2 * 4 for row in par["adapters"])
        full = check_parity(other, ref, prompts, backend="pytorch", n_tokens=4)
        assert full["passed"] and full["prompt_positions"] == "all"
        bad = check_parity(_Wrapped(other, last_only=True, claims_all=True), ref, prompts, backend="pytorch",
                           n_tokens=4, adapters=["extract"])
        assert not bad["passed"] and "logits shape" in bad["adapters"][0]["failures"][0]
    finally:
        ref.close()
        other.close()


def test_static_decoder_last_logits_only_is_the_last_row(preset_dir):
    """Eager, no ExecuTorch: the flag gives the full wrapper's last row; off by default (the vision
    ``text_decoder`` and anything else built without it keep ``[1, T, vocab]``)."""
    import torch
    from transformers import AutoModelForCausalLM

    from memlora.tasks.static_decoder import static_decoder

    model_dir, _ = preset_dir("tiny-qwen2")
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tokens, pos = torch.tensor([IDS]), torch.tensor([0])
    with torch.no_grad():
        full = static_decoder(model, 16, "math")
        last = static_decoder(model, 16, "math", last_logits_only=True)
        assert full.last_logits_only is False
        want, got = full(tokens, pos), last(tokens, pos)
    assert want.shape == (1, len(IDS), model.config.vocab_size) and got.shape == (1, 1, model.config.vocab_size)
    assert torch.allclose(got, want[:, -1:], atol=1e-5)
