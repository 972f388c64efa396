"""The metadata ExecuTorch's stock LLM runner reads from a ``.pte``, as constant methods.

``TextLLMRunner`` (behind Android ``LlmModule`` and iOS ``TextRunner``) refuses a program without
``get_max_seq_len``; without ``enable_dynamic_shape`` it prefills one token per call, without
``get_eos_ids`` it stops only at the tokenizer's single eos. Names and meaning as in ExecuTorch's
``examples/models/llama/export_llama_lib.py`` (``_load_llama_model_metadata``) and
``extension/llm/runner/constants.h``. The values are constants in the program only: the
foundation ``.ptd`` (the shared base weights) does not change.

The program itself already has the runner's signature: ``forward(tokens [1, T] int64,
input_pos [1] int64) -> logits [1, 1, vocab] float32`` (the last position's; bundles written
before that return ``[1, T, vocab]``, and the runner samples the last row of either) with T
dynamic up to ``max_seq_len - 1``.
"""
from __future__ import annotations

from pathlib import Path

# What the runner requires (get_max_seq_len) and what it reads when present.
REQUIRED = ("get_max_seq_len",)
METHODS = ("get_max_seq_len", "get_max_context_len", "use_kv_cache", "use_sdpa_with_kv_cache",
           "enable_dynamic_shape", "get_eos_ids", "get_bos_id", "get_vocab_size", "get_n_layers")


def constant_methods(task, max_seq_len: int, uses_custom_sdpa: bool) -> dict:
    """The constant methods to pass to ``to_edge_transform_and_lower(constant_methods=...)``.

    ``get_max_seq_len`` equals ``get_max_context_len`` (the static cache length): a smaller
    max_seq_len makes the runner treat the model as a sliding-window one.
    """
    from .tokens import bos_id, end_ids

    info = task.info
    return {
        "get_max_seq_len": int(max_seq_len),
        "get_max_context_len": int(max_seq_len),
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": bool(uses_custom_sdpa),
        "enable_dynamic_shape": True,
        "get_eos_ids": end_ids(info.tokenizer_file, info.family.chat_format, info.config, info.path),
        "get_bos_id": bos_id(info.tokenizer_file, info.family.bos, info.config),
        "get_vocab_size": int(task.vocab_size),
        "get_n_layers": int(task.num_layers),
    }


def read_constant_methods(pte: Path, data: Path | None = None) -> dict:
    """Run every metadata method a program has (as the runner does); missing ones are absent."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::*)
    from executorch.extension.pybindings import portable_lib

    kwargs = {"data_path": str(data)} if data is not None else {}
    module = portable_lib._load_for_executorch(str(pte), **kwargs)
    names = set(module.method_names())
    out: dict = {}
    for name in METHODS:
        if name in names:
            values = [v.item() if hasattr(v, "item") else v for v in module.run_method(name, [])]
            out[name] = values if name == "get_eos_ids" else values[0]
    return out
