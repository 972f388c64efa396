"""Parity: does an exported runner say what PyTorch says? One function for every backend.

For each adapter and prompt: the PyTorch reference (eager + PEFT) prefills the prompt and
greedily decodes N tokens; the exported runner is fed the same tokens (teacher forcing), so
logits are compared position by position. Up to the first argmax disagreement this is exactly
free-running greedy decoding on both sides, so the first divergence index is the real one.
A negative control checks the comparison can fail: the reference under a *different* adapter
(or the bare base) must differ from the export by far more than the tolerance.

Only the rows the export returns are compared. A runner whose ``returns_all_positions`` is False
(ExecuTorch programs with last-position logits) gives one row per prefill: its comparison is the
last prompt position plus every decode step (N rows per prompt; max |diff| and KL over those),
and its negative control compares the other adapter's last prompt row with the export's. Any
other shape difference from the reference is a failure.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from .core.runner import Runner

DEFAULT_PROMPTS = (
    "Hi, my name is John and I work as a software engineer in Seattle. Last Saturday I climbed",
    'Extract the facts worth remembering. Return a JSON object: {"facts": ["Name is',
)


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. ``max_abs`` bounds logits (fp32); lossy exports are judged by greedy top-1
    agreement and mean KL(reference || export) instead. ``neg_factor``: the negative control
    must exceed ``neg_factor`` times the logit bound (or the measured error where there is none)."""

    max_abs: float | None
    min_top1: float
    max_kl: float | None
    neg_factor: float


# Keyed by (backend, level) with level = quant, or precision when unquantized; "*" = any backend.
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("*", "fp32"): Tolerance(max_abs=1e-4, min_top1=1.0, max_kl=None, neg_factor=100.0),
    ("*", "fp16"): Tolerance(max_abs=None, min_top1=0.95, max_kl=1e-3, neg_factor=3.0),
    ("*", "int8"): Tolerance(max_abs=None, min_top1=0.9, max_kl=0.02, neg_factor=3.0),
    ("*", "int4"): Tolerance(max_abs=None, min_top1=0.7, max_kl=0.25, neg_factor=2.0),
}


def tolerance_for(backend: str, quant: str, precision: str = "fp32") -> tuple[str, Tolerance]:
    """The tolerance entry for an export; returns (level, tolerance)."""
    backend, quant, precision = (str(getattr(x, "value", x)) for x in (backend, quant, precision))
    level = precision if quant == "none" else quant
    return level, TOLERANCES.get((backend, level)) or TOLERANCES[("*", level)]


@dataclass
class AdapterParity:
    adapter: str | None
    tokens_compared: int = 0
    max_abs_diff: float = 0.0
    top1_agreement: float = 1.0
    kl_mean: float = 0.0
    kl_max: float = 0.0
    first_divergence: int | None = None
    negative_control: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def reference_trace(ref: Runner, adapter: str | None, prompt_ids: Sequence[int], n_tokens: int):
    """Prefill + greedy decode on the reference: logits ``[P + N - 1, V]`` and the N greedy ids."""
    ref.set_adapter(adapter)
    rows = [ref.prefill(prompt_ids)]
    tokens = [int(rows[0][-1].argmax())]
    while len(tokens) < n_tokens:
        rows.append(ref.decode(tokens[-1])[None])
        tokens.append(int(rows[-1][-1].argmax()))
    return np.concatenate(rows, axis=0), tokens


def forced_trace(runner: Runner, adapter: str | None, prompt_ids: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """Run the export on the prompt and then on the reference's tokens (teacher forcing): the
    prompt rows it returns (all ``P``, or the last one), then one row per step."""
    runner.set_adapter(adapter)
    rows = [runner.prefill(prompt_ids)]
    for t in tokens[:-1]:
        rows.append(runner.decode(t)[None])
    return np.concatenate(rows, axis=0)


def check_parity(runner: Runner, reference: Runner, prompts: Sequence[Sequence[int]], *, backend: str,
                 quant: str = "none", precision: str = "fp32", n_tokens: int = 32,
                 adapters: Sequence[str] | None = None) -> dict:
    """Compare ``runner`` with ``reference`` for every adapter; return the manifest's parity block.

    Checks names (adapters present on both sides), then shapes (logits), then values; every
    failure is collected, none stops the others.
    """
    level, tol = tolerance_for(backend, quant, precision)
    names = list(adapters if adapters is not None else runner.adapters)
    results = [_check_adapter(runner, reference, prompts, names, i, tol, n_tokens) for i in range(len(names))]
    return {
        "reference": "pytorch-eager+peft",
        "level": level,
        "tolerance": asdict(tol),
        "n_tokens": n_tokens,
        "prompts": len(prompts),
        "prompt_positions": "all" if getattr(runner, "returns_all_positions", True) else "last",
        "adapters": [dict(asdict(r), passed=r.passed) for r in results],
        "passed": all(r.passed for r in results) and bool(results),
    }


def _check_adapter(runner: Runner, reference: Runner, prompts, names: list, i: int, tol: Tolerance,
                   n_tokens: int) -> AdapterParity:
    """Every prompt under adapter ``names[i]``; the negative control runs another adapter (or the
    bare base when there is only one)."""
    name = names[i]
    res = AdapterParity(name)
    if name not in reference.adapters or name not in runner.adapters:
        res.failures.append(f"adapter {name!r} missing from the {'reference' if name not in reference.adapters else 'export'}")
        return res
    other = names[(i + 1) % len(names)] if len(names) > 1 else None
    all_rows = getattr(runner, "returns_all_positions", True)
    diffs, agree, kls, neg = [], [], [], []
    first_div: int | None = None
    offset = 0
    for ids in prompts:
        ref_logits, tokens = reference_trace(reference, name, ids, n_tokens)
        exp_logits = forced_trace(runner, name, ids, tokens)
        k = len(ids) if all_rows else 1  # prompt rows the export returns: all, or the last
        ref_logits = ref_logits[len(ids) - k:]  # the same rows of the reference, then every step
        if exp_logits.shape != ref_logits.shape:
            res.failures.append(f"logits shape {exp_logits.shape} != reference {ref_logits.shape} "
                                f"({'every' if all_rows else 'the last'} prompt position, then each step)")
            continue
        diffs.append(float(np.abs(exp_logits - ref_logits).max()))
        # Decoding steps start at the last prompt position.
        ref_top = ref_logits[k - 1:].argmax(-1)
        exp_top = exp_logits[k - 1:].argmax(-1)
        agree.extend((ref_top == exp_top).tolist())
        mismatch = np.nonzero(ref_top != exp_top)[0]
        if len(mismatch) and first_div is None:
            first_div = offset + int(mismatch[0])
        offset += len(ref_top)
        lp, lq = _log_softmax(ref_logits), _log_softmax(exp_logits)
        kls.extend((np.exp(lp) * (lp - lq)).sum(-1).tolist())
        other_logits = reference_trace(reference, other, ids, 1)[0]
        neg.append(float(np.abs(other_logits[len(ids) - k:] - exp_logits[:k]).max()))
    if diffs:
        res.tokens_compared, res.max_abs_diff = len(agree), max(diffs)
        res.top1_agreement = float(np.mean(agree))
        res.kl_mean, res.kl_max = float(np.mean(kls)), float(np.max(kls))
        res.first_divergence = first_div
        _judge(res, tol, min(neg), other or "base")
    return res


def _judge(res: AdapterParity, tol: Tolerance, neg: float, other: str) -> None:
    """Apply the tolerance: every failed criterion is recorded."""
    bound = (tol.max_abs if tol.max_abs is not None else max(res.max_abs_diff, 1e-6)) * tol.neg_factor
    res.negative_control = {"against": other, "max_abs_diff": neg, "required": bound}
    if tol.max_abs is not None and res.max_abs_diff > tol.max_abs:
        res.failures.append(f"max |logit diff| {res.max_abs_diff:.3g} > {tol.max_abs:g}")
    if res.top1_agreement < tol.min_top1:
        res.failures.append(f"greedy top-1 agreement {res.top1_agreement:.3f} < {tol.min_top1}")
    if tol.max_kl is not None and res.kl_mean > tol.max_kl:
        res.failures.append(f"mean KL {res.kl_mean:.3g} > {tol.max_kl:g}")
    if neg < bound:
        res.failures.append(f"negative control too weak: swapping to {other} moved logits by "
                            f"{neg:.3g} < {bound:.3g}, so this check could not tell adapters apart")


def artifact_parity(backend, artifact, root, reference: Runner, prompts: Sequence[Sequence[int]],
                    n_tokens: int = 32) -> dict:
    """Load ``artifact`` with its backend module and check it against ``reference``.

    The level comes from what the artifact really is (its quant, and the compute precision the
    backend recorded), and the block says how the export's numerics were produced: by the
    runtime itself, or (Core ML off macOS) by memlora's MIL evaluator.
    """
    runner = backend.load(artifact, root)
    try:
        block = check_parity(runner, reference, prompts, backend=artifact.backend.value, quant=artifact.quant.value,
                             precision=artifact.precision.value, n_tokens=n_tokens)
    finally:
        runner.close()
    block["numerics"] = artifact.meta.get("numerics", f"{artifact.backend.value} runtime")
    return block
