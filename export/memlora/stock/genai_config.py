"""``genai_config.json``: what ONNX Runtime GenAI needs to run memlora's ONNX graphs unmodified.

Format: onnxruntime-genai's ``src/config.h`` (docs: "Config reference"). memlora's graphs take
``input_ids``, ``position_ids`` and ``past.<layer>.key/value`` and return ``logits`` and
``present.<layer>.key/value`` (``memlora.tasks.names``), with no ``attention_mask`` (GenAI feeds
only the inputs a graph has). The cache grows by concatenation, so
``past_present_share_buffer`` is false. External-mode LoRA weights stay in ``.onnx_adapter``
files that GenAI loads with ``og.Adapters`` (their tensors are named as the graph's LoRA inputs).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..tasks.names import kv_names
from .tokens import bos_id, end_ids

CONFIG = "genai_config.json"
NAMES = {"inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                    "past_key_names": "past.%d.key", "past_value_names": "past.%d.value"},
         "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                     "present_value_names": "present.%d.value"}}


def genai_config(info, filename: str, context: int, num_layers: int | None = None) -> dict:
    """The config for one ONNX decoder file (``filename``, in the config's folder)."""
    cfg = info.config
    heads = int(cfg["num_attention_heads"])
    eos = end_ids(info.tokenizer_file, info.family.chat_format, cfg, info.path)
    pad = cfg.get("pad_token_id")
    return {
        "model": {
            "type": info.family.model_type,
            "bos_token_id": bos_id(info.tokenizer_file, info.family.bos, cfg),
            "eos_token_id": eos,
            "pad_token_id": int(pad) if pad is not None else eos[0],
            "context_length": int(context),
            "vocab_size": int(cfg["vocab_size"]),
            "decoder": {
                "filename": filename,
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "head_size": int(cfg.get("head_dim") or cfg["hidden_size"] // heads),
                "hidden_size": int(cfg["hidden_size"]),
                "num_attention_heads": heads,
                "num_key_value_heads": int(cfg.get("num_key_value_heads") or heads),
                "num_hidden_layers": int(num_layers or cfg["num_hidden_layers"]),
                "inputs": dict(NAMES["inputs"]),
                "outputs": dict(NAMES["outputs"]),
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "max_length": int(context),
                   "min_length": 0, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0,
                   "length_penalty": 1.0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
                   "early_stopping": True, "past_present_share_buffer": False},
    }


def write_genai_config(folder: Path, doc: dict) -> Path:
    path = Path(folder) / CONFIG
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def check_genai_config(folder: Path) -> list[str]:
    """What would stop GenAI from running ``folder`` right, each as one line naming the field:
    a missing file, a model file that is not there, or an input/output name the graph lacks."""
    import onnx

    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        return [f"{path}: missing (ONNX Runtime GenAI opens a folder through its {CONFIG})"]
    try:
        dec = json.loads(path.read_text())["model"]["decoder"]
    except (json.JSONDecodeError, KeyError) as e:
        return [f"{path}: not a GenAI config ({type(e).__name__}: {e})"]
    problems = []
    model = folder / dec.get("filename", "")
    if not model.is_file():
        return [f"{path}: model.decoder.filename {dec.get('filename')!r} is not a file in {folder}"]
    graph = onnx.load(str(model), load_external_data=False).graph
    have = {"inputs": {i.name for i in graph.input}, "outputs": {o.name for o in graph.output}}
    layers = int(dec.get("num_hidden_layers", 0))
    for side in ("inputs", "outputs"):
        for key, value in dec.get(side, {}).items():
            wanted = [value % i for i in range(layers)] if "%d" in value else [value]
            missing = [w for w in wanted if w not in have[side]]
            if missing:
                sample = ", ".join(sorted(have[side])[:4])
                problems.append(f"{path}: model.decoder.{side}.{key} {value!r} names no {side[:-1]} of "
                                f"{model.name} (missing {missing[0]!r}; the graph has {sample}, ...)")
    kv_in = {n for n in have["inputs"] if n.startswith("past.")}
    if layers and kv_in and len(kv_in) != len(kv_names(layers, "past")):
        problems.append(f"{path}: model.decoder.num_hidden_layers {layers} but {model.name} has "
                        f"{len(kv_in) // 2} layers of past key/values")
    return problems
