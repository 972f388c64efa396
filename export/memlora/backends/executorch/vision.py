"""ExecuTorch for an SVLM: one self-contained ``.pte`` per adapter with the three methods
ExecuTorch's stock ``MultimodalRunner`` (and Android ``LlmModule`` in multimodal mode) calls.

Methods: ``vision_encoder(uint8 [1, 3, S, S]) -> [1, N, D]``, ``token_embedding(int64 [1, T]) ->
[1, T, D]``, ``text_decoder(inputs_embeds [1, T, D], input_pos [1]) -> logits [1, T, V]`` (static
KV cache inside, ExecuTorch's LLM custom SDPA where a layer allows), plus the constant methods the
runner reads (``get_max_seq_len``, ``get_max_context_len``, ``get_vocab_size``, ``use_kv_cache``,
``enable_dynamic_shape``, ``get_bos_id``, ``get_eos_ids``) and memlora's own
(``get_image_token_id``, ``get_tokens_per_image``, ``get_image_size``, ``get_image_marker``).

Gemma3 lets an image's tokens attend to each other, and the stock runner passes no mask: it
calls ``text_decoder`` once per input (each image alone, each text chunk alone). With
``get_image_marker`` 1 every embedding row carries one more column, 1 from ``vision_encoder`` and
0 from ``token_embedding``, and ``text_decoder`` makes each marked run of one call an image block.
The signal is which method made the row, so a text chunk as long as an image stays causal
(a length rule could not tell them apart). The multimodal runner
takes no data file on Android or iOS, so every program is self-contained: LoRA fused into the
weights (fused) or baked as separate low-rank matmuls (external; same graph shape as the text
programs, base weights not shared).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ...core.artifact import Artifact
from ...core.config import AdapterMode, ExportSpec, Quant
from ...core.errors import ExportFailure, MemloraError

NAME = "executorch"
METHODS = ("vision_encoder", "token_embedding", "text_decoder")


def uses_marker(task) -> bool:
    """Families whose image rows attend to each other (Gemma3) carry the marker column: every
    method's embeddings are ``[1, T, D + 1]`` (see ``memlora.tasks.vision.static_embeds_decoder``)."""
    return bool(task.family.bidirectional_image)


def vision_adapters(task) -> list[str]:
    """The adapters that get a multimodal program: ``vqa`` (MemLoRA-V picks it when a question needs
    an image); every adapter when there is no ``vqa``. The others keep the text layout."""
    return ["vqa"] if "vqa" in task.adapters else list(task.adapters)


def metadata(task, spec: ExportSpec) -> dict:
    c, tc = task.contract, task.text_config
    eos = tc.eos_token_id if isinstance(tc.eos_token_id, list) else [tc.eos_token_id]
    return {"get_max_seq_len": spec.max_seq_len, "get_max_context_len": spec.max_seq_len,
            "get_vocab_size": tc.vocab_size, "use_kv_cache": True, "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": True, "get_bos_id": int(tc.bos_token_id), "get_eos_ids": [int(e) for e in eos],
            "get_image_token_id": c.image_token_id, "get_tokens_per_image": c.tokens_per_image,
            "get_image_size": c.tile, "get_image_marker": int(uses_marker(task))}


def _programs(task, spec: ExportSpec, adapter=None):
    """torch.export of the three methods (LoRA baked into the decoder when ``adapter`` is given)."""
    import torch

    from ...tasks.delegable import delegable_activations, delegable_norms, tanh_gelu_written_out
    from ...tasks.lora import bake_adapter
    from .export import _quantize
    from ...tasks.vision import Marked, TokenEmbedding, VisionEncoder, remap_adapter, static_embeds_decoder

    info: dict = {}
    tile = task.contract.tile
    px = torch.randint(0, 256, (1, 3, tile, tile), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    seq = torch.export.Dim("seq", min=1, max=spec.max_seq_len - 1)
    marker = uses_marker(task)
    dec = static_embeds_decoder(task, spec.max_seq_len, image_marker=marker)
    encoder, embedding = VisionEncoder(task).eval(), TokenEmbedding(task).eval()
    if marker:
        encoder, embedding = Marked(encoder, 1.0).eval(), Marked(embedding, 0.0).eval()
    info["attention"] = dec.attention_summary
    info["norms_as_linear"] = delegable_norms(dec)
    info["gelu_tanh_explicit"] = delegable_activations(dec)
    if adapter is not None:
        bake_adapter(dec.model, remap_adapter(task, adapter))
    if spec.quant is not Quant.NONE:
        info["quantized_linears"] = _quantize(dec, spec)
    eps = {}
    with torch.no_grad():
        # XNNPACK's GELU ignores approximate="tanh" (SigLIP towers use it): written out, as in the decoder
        with tanh_gelu_written_out(encoder) as n_gelu:
            eps["vision_encoder"] = torch.export.export(encoder, (px,), strict=False)
        info["vision_gelu_tanh_explicit"] = n_gelu
        eps["token_embedding"] = torch.export.export(embedding, (torch.zeros(1, 3, dtype=torch.long),),
                                                     dynamic_shapes=({1: seq},), strict=True)
        width = task.hidden_size + int(marker)
        ep = torch.export.export(dec, (torch.zeros(1, 3, width), torch.tensor([0], dtype=torch.long)),
                                 dynamic_shapes={"inputs_embeds": {1: seq}, "input_pos": None}, strict=True)
        eps["text_decoder"] = ep.run_decompositions({}) if spec.quant is not Quant.NONE else ep
    return eps, info


def _lower(task, spec: ExportSpec, adapter=None):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from ..export_job import export_failure
    from .report import delegation_report

    def fail(stage: str, e: Exception):
        return export_failure("executorch", stage, e, task.family.model_type, task.info.path,
                              "report this model; try --backend onnx")

    try:
        eps, info = _programs(task, spec, adapter)
    except Exception as e:
        raise fail("torch.export", e) from None
    try:
        edge = to_edge_transform_and_lower(eps, partitioner=[XnnpackPartitioner()], constant_methods=metadata(task, spec),
                                           compile_config=EdgeCompileConfig(_check_ir_validity=False))
        info["delegation"] = {m: delegation_report(edge.exported_program(m).graph_module) for m in METHODS}
        program = edge.to_executorch(ExecutorchBackendConfig(
            extract_delegate_segments=True, memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
        program.buffer  # noqa: B018
    except Exception as e:
        raise fail("lowering to XNNPACK", e) from None
    return program, info


def export(task, spec: ExportSpec, out_dir: Path) -> Artifact:
    """One multimodal ``.pte`` per adapter under ``out_dir/executorch/vlm-<mode>-<quant>/``."""
    from ...tasks.lora import fused

    out_dir = Path(out_dir)
    sub = Path("executorch") / f"vlm-{spec.adapter_mode.value}-{spec.quant.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    meta: dict = {"kind": "vision-language", "runtime": "xnnpack", "methods": list(METHODS),
                  "constant_methods": metadata(task, spec), "self_contained": True, "per_adapter": {}}
    t0 = time.perf_counter()
    names = vision_adapters(task)
    for name in names:
        adapter = task.adapters[name]
        t1 = time.perf_counter()
        if spec.adapter_mode is AdapterMode.EXTERNAL:
            program, info = _lower(task, spec, adapter)
        else:
            with fused(task.model, adapter):
                program, info = _lower(task, spec, None)
        rel = sub / f"{name}.pte"
        (out_dir / rel).write_bytes(program.buffer)
        files[f"model:{name}"] = str(rel)
        info["export_seconds"] = round(time.perf_counter() - t1, 2)
        info["pte_bytes"] = (out_dir / rel).stat().st_size
        meta["per_adapter"][name] = info
    first = next(iter(meta["per_adapter"].values()))
    meta["delegation"], meta["attention"] = first["delegation"], first["attention"]
    meta["file_bytes"] = {role: (out_dir / rel).stat().st_size for role, rel in files.items()}
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    return Artifact(NAME, spec.adapter_mode.value, spec.quant.value, names, files, spec.max_seq_len, meta)


def load(artifact: Artifact, root: Path) -> "VisionExecuTorchRunner":
    return VisionExecuTorchRunner(artifact, Path(root))


class VisionExecuTorchRunner:
    """The three methods through the pybindings runtime (one program loaded at a time)."""

    def __init__(self, artifact: Artifact, root: Path):
        from .runner import _import_runtime

        self._rt = _import_runtime()
        self.artifact, self.root = artifact, Path(root)
        self.adapters = list(artifact.adapters)
        self.max_seq_len = artifact.max_seq_len
        self._module = None
        self._key: str | None = None
        # the marker column (Gemma3): stripped from what the methods return, rebuilt from blocks
        self._marker = bool(artifact.meta.get("constant_methods", {}).get("get_image_marker", 0))
        self.set_adapter(self.adapters[0])

    def set_adapter(self, name: str | None) -> None:
        if name is None:
            raise MemloraError("ExecuTorch exports hold one program per adapter, no bare base", fix="pick an adapter")
        if name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if self._key != name:
            path = self.root / self.artifact.files[f"model:{name}"]
            if not path.is_file():
                raise MemloraError("exported ExecuTorch file missing", path, "re-run memlora export")
            self._module = None
            self._module = self._rt._load_for_executorch(str(path))
            self._key = name
        self.reset()

    def reset(self) -> None:
        self._pos = 0
        if self._marker:
            self._blocks: list[int] = []  # what the parity's causal-mask control looks for

    def _strip(self, out) -> np.ndarray:
        x = out[0][0].float().numpy()
        return x[:, :-1] if self._marker else x

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        return self._strip(self._module.run_method(
            "vision_encoder", [torch.from_numpy(np.ascontiguousarray(pixel_values, np.uint8))]))

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        return self._strip(self._module.run_method("token_embedding", [torch.tensor([list(ids)], dtype=torch.long)]))

    def prefill_embeds(self, embeds: np.ndarray, blocks=None) -> np.ndarray:
        """``embeds [T, D]``; ``blocks`` (image block per row, -1 text) set the marker column."""
        import torch

        n = embeds.shape[0]
        if self._marker:
            flag = (np.asarray(blocks) >= 0) if blocks is not None else np.zeros(n, bool)
            embeds = np.concatenate([embeds, flag[:, None].astype(np.float32)], axis=1)
        if self._pos + n > self.max_seq_len:
            raise MemloraError(f"KV cache full: {self._pos} cached + {n} new > max_seq_len {self.max_seq_len}",
                               fix="reset() between prompts or re-export with a larger --max-seq-len")
        out = self._module.run_method("text_decoder", [torch.from_numpy(np.ascontiguousarray(embeds[None], np.float32)),
                                                      torch.tensor([self._pos], dtype=torch.long)])
        self._pos += n
        return out[0][0].float().numpy()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self.prefill_embeds(self.embed(ids))

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._module = None
