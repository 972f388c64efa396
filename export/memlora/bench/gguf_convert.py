"""A Hugging Face decoder folder -> an f32 GGUF file, for timing llama.cpp on the same weights.

Only what ``llama-bench`` needs: the architecture's hyperparameters, every tensor under its GGUF
name (``gguf.get_tensor_name_map``), and a placeholder vocabulary of the right size
(``tokenizer.ggml.model = "none"`` with ``<arch>.vocab_size``: llama.cpp then makes that many
dummy tokens, and llama-bench feeds random ids). No tokenizer, chat template or RoPE-scaling
tables: the file is for speed, not for text. Llama-style q/k projections are permuted the way
llama.cpp's own converter does (its "normal" RoPE pairs adjacent dims; Hugging Face rotates
halves); Qwen2/Qwen3 use NeoX RoPE and are written as they are.

Needs the ``gguf`` package (``pip install "memlora[llamacpp]"``, pinned in pyproject.toml), or a
llama.cpp source tree whose ``gguf-py`` folder is put on the path (:func:`import_gguf`).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..core.errors import MemloraError

ARCHES = {"qwen2": "QWEN2", "qwen3": "QWEN3", "llama": "LLAMA"}


def import_gguf(source_tree: Path | None = None):
    """The ``gguf`` module: installed, or from ``<llama.cpp>/gguf-py`` (the tree llama-bench was built in)."""
    try:
        import gguf
    except ImportError:
        py = source_tree / "gguf-py" if source_tree else None
        if py is None or not (py / "gguf").is_dir():
            raise MemloraError("the gguf package is not installed", source_tree,
                               'pip install "memlora[llamacpp]" (or point LLAMA_BENCH into a llama.cpp '
                               "source tree with gguf-py)") from None
        sys.path.insert(0, str(py))
        import gguf
    return gguf


def _permute(w, heads: int):
    """Hugging Face rotate-half q/k rows -> llama.cpp's adjacent-pair layout (as its converter)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _metadata(writer, gguf, cfg: dict, name: str) -> None:
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    writer.add_name(name)
    writer.add_context_length(cfg.get("max_position_embeddings", 4096))
    writer.add_embedding_length(h)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(cfg.get("num_key_value_heads") or heads)
    head_dim = cfg.get("head_dim") or h // heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("none")  # placeholder vocabulary: vocab_size dummy tokens


def convert(model_dir: Path, out: Path, source_tree: Path | None = None) -> Path:
    """Write ``out`` (f32 GGUF) from the safetensors weights in ``model_dir``; temp file + rename."""
    import torch
    from safetensors import safe_open

    gguf = import_gguf(source_tree)
    model_dir, out = Path(model_dir), Path(out)
    cfg = json.loads((model_dir / "config.json").read_text())
    arch_name = ARCHES.get(cfg.get("model_type"))
    if arch_name is None:
        raise MemloraError(f"no GGUF conversion for model type {cfg.get('model_type')!r}", model_dir / "config.json",
                           f"llama.cpp peer rows cover {', '.join(ARCHES)}")
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    heads, kv_heads = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    _metadata(writer, gguf, cfg, model_dir.name)
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                if key == "lm_head.weight" and cfg.get("tie_word_embeddings", True):
                    continue  # tied: llama.cpp reads token_embd as the output matrix
                w = f.get_tensor(key).to(torch.float32).numpy()
                if arch_name == "LLAMA" and key.endswith("q_proj.weight"):
                    w = _permute(w, heads)
                elif arch_name == "LLAMA" and key.endswith("k_proj.weight"):
                    w = _permute(w, kv_heads)
                gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if gname is None:
                    raise MemloraError(f"no GGUF name for tensor {key}", shard, "report this model")
                writer.add_tensor(gname, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out
