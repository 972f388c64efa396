"""Per artifact: write what its stock runtime reads beside it, and describe how to open it.

``package_artifact`` runs right after a backend exported an artifact. It writes ONNX Runtime
GenAI's ``genai_config.json`` (and a tokenizer) into each ONNX model folder and returns the
artifact's ``stock`` block for the manifest: per stock runtime, the constructor to call, the
program and data files in order, the tokenizer, end ids, context, ``num_bos`` and the custom ops
to link. ExecuTorch needs no extra file (its metadata is inside the ``.pte``); Core ML has no
stock LLM runner, so its block lists the names, dtypes, shapes and functions a Swift engine needs.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..core.artifact import Artifact
from .genai_config import CONFIG as GENAI_CONFIG, genai_config, write_genai_config
from .tokenizer_config import FILE as TOKENIZER_CONFIG, write_tokenizer_config  # noqa: F401
from .tokens import bos_id, end_ids

TOKENIZER = "tokenizer.json"
PROMPT_NOTE = ("the app renders the prompt itself (prompts/*.txt in the model's chat format, bos marker "
               "included as text) and passes num_bos=0, num_eos=0; greedy = temperature 0")


def _common(info, context: int) -> dict:
    return {"context_length": int(context),
            "eos_ids": end_ids(info.tokenizer_file, info.family.chat_format, info.config, info.path),
            "bos_id": bos_id(info.tokenizer_file, info.family.bos, info.config),
            "chat_format": info.family.chat_format, "num_bos": 0, "num_eos": 0, "prompt": PROMPT_NOTE}


def package_artifact(artifact: Artifact, root: Path, info, context: int) -> dict:
    """Write the artifact's stock-runtime files under ``root`` and return its ``stock`` block."""
    fn = {"executorch": _executorch, "onnx": _onnx, "coreml": _coreml}.get(artifact.backend)
    return {"runtimes": fn(artifact, Path(root), info, context) if fn else []}


def _executorch(artifact: Artifact, root: Path, info, context: int) -> list[dict]:
    external = artifact.adapter_mode == "external"
    data = [artifact.files["foundation"]] if external else []
    meta = artifact.meta.get("runner_metadata", {})
    custom = "custom" in (artifact.meta.get("attention") or {})
    per = {}
    for name in artifact.adapters:
        program = artifact.files[f"adapter:{name}" if external else f"model:{name}"]
        per[name] = {"program": program, "data_files": data, "tokenizer": TOKENIZER}
    data_kt = "listOf(" + ", ".join(f'"{d}"' for d in data) + ")"
    block = {
        "runtime": "executorch-text-llm-runner",
        "runner": "ExecuTorch TextLLMRunner (extension/llm/runner): Android LlmModule, iOS TextRunner",
        "per_adapter": per,
        "constructors": {
            "android": f'LlmModule(LlmModule.MODEL_TYPE_TEXT, program, tokenizer, 0.0f, {data_kt}, 0, 0)',
            "ios": ("TextRunner(modelPath: program, tokenizerPath: tokenizer)" if not external else None),
            "python": "executorch.extension.llm.runner.TextLLMRunner(program, tokenizer"
                      + (", data_path)" if external else ")"),
        },
        "ios": ("supported: one self-contained .pte per adapter" if not external else
                "not supported: iOS TextRunner takes no data files, and these programs need the shared "
                "foundation .ptd; export --adapter-mode fused for ExecuTorch on iOS"),
        "adapter_switch": ("load the adapter's .pte with the same data files (a new runner; the .ptd stays "
                           "one file on disk)" if external else "load the adapter's .pte (a new runner)"),
        "metadata": meta,  # constant methods inside every .pte (memlora.stock.executorch_meta)
        "custom_ops": (["llama::update_cache", "llama::custom_sdpa"] if custom else []),
        "link": ("ExecuTorch's LLM custom ops (extension/llm/custom_ops; in the LlmModule AAR and the "
                 "ExecuTorchLLM framework; Python: import executorch.extension.llm.custom_ops) and the "
                 "XNNPACK backend" if custom else "the XNNPACK backend"),
        **_common(info, context),
    }
    return [block]


def _onnx(artifact: Artifact, root: Path, info, context: int) -> list[dict]:
    """One GenAI model folder for the external base (adapters loaded with og.Adapters), one per
    adapter in fused mode (GenAI refuses ``..`` in a model file name, so each fused model has
    its own folder)."""
    external = artifact.adapter_mode == "external"
    models = {None: artifact.files["model"]} if external else {n: artifact.files[f"model:{n}"] for n in artifact.adapters}
    folders, per = {}, {}
    for adapter, rel in models.items():
        model = Path(rel)
        folder = root / model.parent
        write_genai_config(folder, genai_config(info, model.name, context,
                                                artifact.meta.get("num_layers") or info.config["num_hidden_layers"]))
        # A self-contained folder: og.Model(folder) finds its tokenizer beside the config.
        for name in (TOKENIZER, TOKENIZER_CONFIG):
            shutil.copyfile(root / name, folder / name)
        folders[adapter] = model.parent.as_posix()
    for name in artifact.adapters:
        folder = folders[None] if external else folders[name]
        per[name] = {"model_folder": folder, "config": f"{folder}/{GENAI_CONFIG}", "tokenizer": f"{folder}/{TOKENIZER}"}
        if external:
            per[name]["adapter_file"] = artifact.files[f"adapter:{name}"]
    block = {
        "runtime": "onnxruntime-genai",
        "runner": "ONNX Runtime GenAI (og.Model + og.Adapters; same C core on Android Java and iOS C/ObjC)",
        "per_adapter": per,
        "constructors": {
            "python": ("m = og.Model(model_folder); a = og.Adapters(m); a.load(adapter_file, name); "
                       "g = og.Generator(m, og.GeneratorParams(m)); g.set_active_adapter(a, name)") if external else
                      "m = og.Model(model_folder); g = og.Generator(m, og.GeneratorParams(m))",
            "android": ("new Model(modelFolder); new Adapters(model).loadAdapter(adapterFile, name); "
                        "generator.setActiveAdapter(adapters, name)") if external else "new Model(modelFolder)",
            "ios": ("OgaModel(modelFolder) + OgaAdapters.loadAdapter(adapterFile, name); "
                    "generator.setActiveAdapter(adapters, name)") if external else "OgaModel(modelFolder)",
        },
        "ios": "supported",
        "adapter_switch": ("set_active_adapter on a new Generator (the model and its weights stay loaded)"
                           if external else "open the adapter's model folder"),
        "custom_ops": [],
        **_common(info, context),
    }
    return [block]


def _coreml(artifact: Artifact, root: Path, info, context: int) -> list[dict]:
    from .coreml_describe import describe_package

    external = artifact.adapter_mode == "external"
    packages = {None: artifact.files["model"]} if external else {n: artifact.files[f"model:{n}"] for n in artifact.adapters}
    functions = artifact.meta.get("functions", {})
    per = {}
    for name in artifact.adapters:
        rel = packages[None] if external else packages[name]
        per[name] = {"package": rel, "function": functions.get(name) if external else "main"}
    described = {rel: describe_package(root / rel) for rel in dict.fromkeys(packages.values())}
    block = {
        "runtime": "coreml",
        "runner": ("none stock: Core ML has no LLM runner; a Swift engine loads the package with "
                   "MLModelConfiguration.functionName = function, makes the KV state with "
                   "model.makeState(), and calls prediction(from:using:) per chunk"),
        "per_adapter": per,
        "interface": described,  # names, dtypes, shapes, states per function, read from the package
        "inputs_meaning": {"input_ids": "[1, T] int32 token ids", "position_ids": "[1, T] int32 positions",
                           "causal_mask": "[1, 1, T, past+T] float32, 0 = attend, -inf = masked; the write "
                                          "position is past = mask width - T"},
        "ios": "supported (iOS 18+: Core ML state)",
        "adapter_switch": "another function of the same package (external) or another package (fused); "
                          "drop the state",
        "custom_ops": [],
        **_common(info, context),
    }
    return [block]
