"""ONNX for an SVLM: ``vision.onnx``, ``embedding.onnx`` and the text graph on embeddings.

The layout ONNX Runtime GenAI uses for its VLMs: a fixed-shape vision graph (``pixel_values``
uint8 ``[1, 3, S, S]`` -> ``image_features [1, N, D]``), an embedding graph (``input_ids`` ->
``inputs_embeds``) and the text graph (``inputs_embeds``, ``position_ids``, an additive
``attention_mask [1, 1, T, P+T]``, past key/values -> logits, presents). The text graph takes LoRA
A/B as named inputs with zero-rank defaults (external; one ``.onnx_adapter`` per adapter) or is
one graph per adapter with LoRA fused (fused). The vision and embedding graphs hold no LoRA
(memory adapters never touch them) and are written once per bundle under ``onnx/vision/``.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ...core.artifact import Artifact
from .export import _exporter_quiet, _save, finish_decoder, write_onnx_adapter
from ...core.config import AdapterMode, ExportSpec
from ...core.errors import ExportFailure, MemloraError
from ...tasks.names import kv_names, lora_input_names

NAME = "onnx"
SHARED = Path("onnx") / "vision"


def _export(module, args, dyn, input_names, output_names, opset: int, what: str, task):
    import onnx
    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        try:
            with _exporter_quiet():
                program = torch.onnx.export(module, args, dynamic_shapes=dyn, dynamo=True, opset_version=opset,
                                            input_names=input_names, output_names=output_names, verbose=False,
                                            optimize=True)
        except Exception as e:  # the exporter raises many types; name the graph, family and first line
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportFailure(f"ONNX export of the {what} of family {task.family.model_type} failed: {first}",
                                task.info.path, "report this model") from None
        f = Path(tmp) / "m.onnx"
        program.save(str(f), external_data=True)
        return onnx.load(str(f))


def export_shared(task, spec: ExportSpec, out_dir: Path) -> dict[str, str]:
    """vision.onnx and embedding.onnx (once per bundle); returns their roles -> paths."""
    import torch

    from ...tasks.vision import TokenEmbedding, VisionEncoder

    files = {"vision": str(SHARED / "vision.onnx"), "embedding": str(SHARED / "embedding.onnx")}
    if all((out_dir / p).is_file() for p in files.values()):
        return files
    (out_dir / SHARED).mkdir(parents=True, exist_ok=True)
    tile = task.contract.tile
    px = torch.randint(0, 256, (1, 3, tile, tile), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    enc = VisionEncoder(task).eval()
    model = _export(enc, (px,), None, ["pixel_values"], ["image_features"], spec.onnx.opset, "vision encoder", task)
    _save(model, out_dir / files["vision"])
    emb = TokenEmbedding(task).eval()
    seq = torch.export.Dim("seq", min=1, max=32768)
    model = _export(emb, (torch.zeros(1, 3, dtype=torch.long),), {"input_ids": {1: seq}}, ["input_ids"],
                    ["inputs_embeds"], spec.onnx.opset, "token embedding", task)
    _save(model, out_dir / files["embedding"])
    return files


def _text_graph(task, spec: ExportSpec, modules: list[str]):
    import torch

    from ...tasks.vision import EmbedsKVDecoder, example_inputs

    wrapper = EmbedsKVDecoder(task, modules).eval()
    embeds, pos, mask, past, lora = example_inputs(task)
    seq, past_len = torch.export.Dim("seq", min=1, max=32768), torch.export.Dim("past", min=0, max=32768)
    total = torch.export.Dim("total", min=1, max=65536)
    ranks = [torch.export.Dim(f"rank_{i}", min=0, max=1024) for i in range(len(modules))]
    dyn = {"inputs_embeds": {1: seq}, "position_ids": {1: seq}, "attention_mask": {2: seq, 3: total},
           "past": [({2: past_len}, {2: past_len}) for _ in range(task.num_layers)],
           "lora": [({1: r}, {0: r}) for r in ranks]}  # A^T [in, r], B^T [r, out]
    args = (embeds, pos, mask, past, lora)
    if not modules:
        args, dyn = args[:4], {k: v for k, v in dyn.items() if k != "lora"}
    L = task.num_layers
    names = ["inputs_embeds", "position_ids", "attention_mask"] + kv_names(L, "past") + lora_input_names(modules)
    model = _export(wrapper, args, dyn, names, ["logits"] + kv_names(L, "present"), spec.onnx.opset, "text decoder", task)
    return finish_decoder(model, modules, spec)[0]


def export(task, spec: ExportSpec, out_dir: Path) -> Artifact:
    """Export the three graphs of ``task`` under ``out_dir/onnx/`` and describe them."""
    from ...tasks.lora import fused, remove_lora

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    files = export_shared(task, spec, out_dir)
    meta: dict = {"opset": spec.onnx.opset, "kind": "vision-language", "seconds_shared": round(time.perf_counter() - t0, 2)}
    sub = Path("onnx") / f"vlm-{spec.adapter_mode.value}-{spec.quant.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    if spec.adapter_mode is AdapterMode.EXTERNAL:
        modules = task.lora_modules()
        try:
            model = _text_graph(task, spec, modules)
        finally:
            remove_lora(task.model)
        files["text"] = str(sub / "text.onnx")
        meta["ops"] = _save(model, out_dir / files["text"])
        meta["lora_inputs"] = 2 * len(modules)
        for name, adapter in task.adapters.items():
            rel = sub / f"{name}.onnx_adapter"
            write_onnx_adapter(adapter, out_dir / rel)
            files[f"adapter:{name}"] = str(rel)
    else:
        for name, adapter in task.adapters.items():
            with fused(task.model, adapter):
                model = _text_graph(task, spec, [])
            files[f"text:{name}"] = str(sub / f"text-{name}.onnx")
            meta["ops"] = _save(model, out_dir / files[f"text:{name}"])
    meta["seconds_text"] = round(time.perf_counter() - t1, 2)
    meta["file_bytes"] = {role: (out_dir / rel).stat().st_size for role, rel in files.items()}
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    meta["genai_config"] = str(sub / "genai_config.json")
    _write_genai_config(task, files, out_dir / sub / "genai_config.json", spec)
    return Artifact(NAME, spec.adapter_mode.value, spec.quant.value, list(task.adapters), files, None, meta)


def _write_genai_config(task, files: dict[str, str], path: Path, spec: ExportSpec) -> None:
    """``vision`` / ``embedding`` / ``decoder`` sections in ONNX Runtime GenAI's shape. GenAI's
    own loaders support a fixed list of model types; this records the graphs and their I/O names
    so an app (or a GenAI build that knows the family) can wire them."""
    import json

    rel = str  # paths relative to the bundle root, as everywhere in the manifest
    c = task.text_config
    text_file = files.get("text") or next(v for k, v in files.items() if k.startswith("text:"))
    cfg = {"model": {
        "type": task.family.model_type, "vocab_size": c.vocab_size, "context_length": spec.max_seq_len,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
        "image_token_id": task.contract.image_token_id,
        "vision": {"filename": rel(files["vision"]), "inputs": {"pixel_values": "pixel_values"},
                   "outputs": {"image_features": "image_features"},
                   "spatial_merge": None, "tokens_per_image": task.contract.tokens_per_image},
        "embedding": {"filename": rel(files["embedding"]), "inputs": {"input_ids": "input_ids"},
                      "outputs": {"inputs_embeds": "inputs_embeds"}},
        "decoder": {"filename": rel(text_file), "num_hidden_layers": task.num_layers,
                    "num_key_value_heads": task.kv_heads, "head_size": task.head_dim,
                    "hidden_size": task.hidden_size,
                    "inputs": {"inputs_embeds": "inputs_embeds", "position_ids": "position_ids",
                               "attention_mask": "attention_mask", "past_key_names": "past.%d.key",
                               "past_value_names": "past.%d.value"},
                    "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                                "present_value_names": "present.%d.value"}}},
        "memlora": {"attention_mask": "additive float [1,1,T,P+T]; see vision/preprocess.json 'attention'"}}
    path.write_text(json.dumps(cfg, indent=2))


def load(artifact: Artifact, root: Path, threads: int | None = None) -> "VisionOnnxRunner":
    return VisionOnnxRunner(artifact, Path(root), threads)


class VisionOnnxRunner:
    """Three onnxruntime sessions: vision, embedding, text (one per adapter when fused)."""

    def __init__(self, artifact: Artifact, root: Path, threads: int | None = None):
        import onnxruntime as ort

        self._ort = ort
        self.artifact, self.root = artifact, Path(root)
        self.adapters = list(artifact.adapters)
        self.max_seq_len = None
        self._opts = ort.SessionOptions()
        self._opts.log_severity_level = 3
        if threads:
            self._opts.intra_op_num_threads = threads
        self._vision = self._open(artifact.files["vision"])
        self._embedding = self._open(artifact.files["embedding"])
        self._external = artifact.adapter_mode == AdapterMode.EXTERNAL.value
        self._lora: dict[str, object] = {}
        self._text = None
        self._text_key: str | None = None
        if self._external:
            self._text = self._open(artifact.files["text"])
            for name in self.adapters:
                la = ort.LoraAdapter()
                la.Load(str(self.root / artifact.files[f"adapter:{name}"]))
                self._lora[name] = la
        self._run_options = None
        self.set_adapter(self.adapters[0])

    def _open(self, rel: str):
        path = self.root / rel
        if not path.is_file():
            raise MemloraError("exported model file missing", path, "re-run memlora export")
        return self._ort.InferenceSession(str(path), self._opts, providers=["CPUExecutionProvider"])

    def _bind_names(self) -> None:
        names = [i.name for i in self._text.get_inputs()]
        self._past_names = [n for n in names if n.startswith("past.")]
        shape = self._text.get_inputs()[names.index(self._past_names[0])].shape
        self._kv = (shape[1], shape[3])

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if self._external:
            self._run_options = self._ort.RunOptions()
            if name is not None:
                self._run_options.add_active_adapter(self._lora[name])
        else:
            if name is None:
                raise MemloraError("a fused export has no bare base model", fix="pick an adapter")
            if self._text_key != name:
                self._text = None
                self._text = self._open(self.artifact.files[f"text:{name}"])
                self._text_key = name
        self._bind_names()
        self.reset()

    def reset(self) -> None:
        heads, dim = self._kv
        self._past = {n: np.zeros((1, heads, 0, dim), np.float32) for n in self._past_names}
        self._pos = 0
        self._blocks: list[int] = []

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        """``uint8 [1, 3, S, S]`` -> ``[N, D]``."""
        return self._vision.run(None, {"pixel_values": np.ascontiguousarray(pixel_values, np.uint8)})[0][0]

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        return self._embedding.run(None, {"input_ids": np.asarray([list(ids)], np.int64)})[0][0]

    def prefill_embeds(self, embeds: np.ndarray, blocks: Sequence[int] | None = None) -> np.ndarray:
        """Append ``embeds [T, D]`` (``blocks``: image block per position, -1 text) -> logits ``[T, V]``."""
        from ...tasks.vision import additive_mask

        n = embeds.shape[0]
        self._blocks.extend(blocks if blocks is not None else [-1] * n)
        mask = additive_mask(range(self._pos, self._pos + n), self._pos + n,
                             self._blocks if any(b >= 0 for b in self._blocks) else None)
        feeds = {"inputs_embeds": np.ascontiguousarray(embeds[None], np.float32),
                 "position_ids": np.arange(self._pos, self._pos + n, dtype=np.int64)[None],
                 "attention_mask": mask, **self._past}
        outs = self._text.run(None, feeds, self._run_options)
        self._past = dict(zip(self._past_names, outs[1:]))
        self._pos += n
        return outs[0][0]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self.prefill_embeds(self.embed(ids))

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._text = self._vision = self._embedding = None
