"""The record one benchmark measurement runs from: built by ``run.py``, sent as JSON to a fresh
``python -m memlora.bench.worker`` process, read back there with :meth:`BenchJob.from_json`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


@dataclass
class BenchJob:
    """One runner to load and time.

    Attributes:
        kind: ``artifact`` (an export), ``pytorch`` (eager + PEFT) or ``resident`` (every fused
            model of an artifact loaded at once, for peak RSS).
        root, artifact: the bundle folder and the artifact's manifest entry (artifact, resident).
        model_dir, adapter_dirs, attn_implementation: the reference's sources (pytorch).
        adapters: adapters to time; switch_pair: the a and b of a-b-a switching.
        prompt_lens, decode_prompt_len, decode_tokens, requested_prompt_lens, max_seq_len: the
            plan, clipped to the artifact's KV-cache capacity.
        repeats, warmup, switch_repeats: timed runs, untimed runs, a-b-a rounds.
        threads: CPU threads every runtime is given; vocab_size, seed: the random prompts.
        programs: ExecuTorch adapter programs kept loaded (``auto``, ``all``, ``one``; see Residency).
        rss_runtime_kb: RSS after the runtime imported, before the model loaded (set in the worker).
    """

    kind: str = "artifact"
    root: str | None = None
    artifact: dict | None = None
    model_dir: str | None = None
    adapter_dirs: dict[str, str] = field(default_factory=dict)
    attn_implementation: str = "eager"
    adapters: list[str] = field(default_factory=list)
    switch_pair: list[str] = field(default_factory=list)
    prompt_lens: list[int] = field(default_factory=list)
    decode_prompt_len: int = 1
    decode_tokens: int = 1
    requested_prompt_lens: list[int] = field(default_factory=list)
    max_seq_len: int | None = None
    repeats: int = 1
    warmup: int = 0
    switch_repeats: int = 0
    threads: int | None = None
    programs: str = "auto"
    vocab_size: int = 2
    seed: int = 0
    rss_runtime_kb: int | None = None

    def plan(self) -> dict:
        """The measurement plan as the rows and the report read it."""
        return {k: getattr(self, k) for k in ("prompt_lens", "decode_tokens", "decode_prompt_len",
                                               "requested_prompt_lens", "max_seq_len")}

    def but(self, **changes) -> "BenchJob":
        return replace(self, **changes)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "BenchJob":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
