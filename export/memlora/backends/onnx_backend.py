"""ONNX / onnxruntime backend: dynamo export with explicit past key-values, LoRA as named inputs.

external mode: one ``base.onnx`` whose LoRA A/B are graph inputs with zero-rank default
initializers (so the base runs alone), plus one ``<adapter>.onnx_adapter`` per adapter,
activated per run with ``RunOptions.add_active_adapter``.
fused mode: one ``<adapter>.onnx`` per adapter, LoRA merged into the weights.
Quantization: MatMulNBits (8 or 4 bits, symmetric, block ``group_size``, accuracy_level 4) on
the base weights only; LoRA matmuls take their B from graph inputs, so they stay float and
adapters of any rank still load.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import AdapterMode, ExportSpec, Quant
from ..errors import ExportFailure, MemloraError
from ..tasks.names import kv_names, lora_input_names
from .base import Artifact

if TYPE_CHECKING:  # the export path needs torch; the runner must not (it costs ~300 MB per process)
    from ..tasks.decoder import DecoderTask

NAME = "onnx"
_EXTERNAL_DATA_BYTES = 1 << 30  # beyond this, weights go to a side file (protobuf stops at 2 GiB)


def available() -> str | None:
    """None if onnx, onnxscript and onnxruntime import, else the reason."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        return f"missing package {e.name} (pip install memlora[onnx])"
    return None


def export(task: DecoderTask, spec: ExportSpec, out_dir: Path) -> Artifact:
    """Export ``task`` under ``out_dir/onnx/<mode>-<quant>/`` and describe the files."""
    from ..tasks.lora import fused, remove_lora

    sub = Path("onnx") / f"{spec.adapter_mode.value}-{spec.quant.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    meta: dict = {"opset": spec.opset}
    t0 = time.perf_counter()
    if spec.adapter_mode is AdapterMode.EXTERNAL:
        modules = task.lora_modules()
        try:
            model = _export_graph(task, spec, modules)
        finally:
            remove_lora(task.model)
        files["model"] = str(sub / "base.onnx")
        meta["ops"] = _save(model, out_dir / files["model"])
        meta["lora_inputs"] = len(modules) * 2
        for name, adapter in task.adapters.items():
            rel = sub / f"{name}.onnx_adapter"
            write_onnx_adapter(adapter, out_dir / rel)
            files[f"adapter:{name}"] = str(rel)
    else:
        for name, adapter in task.adapters.items():
            with fused(task.model, adapter):
                model = _export_graph(task, spec, [])
            # One folder per fused model: ONNX Runtime GenAI opens a folder (memlora.stock).
            (out_dir / sub / name).mkdir(exist_ok=True)
            files[f"model:{name}"] = str(sub / name / f"{name}.onnx")
            meta["ops"] = _save(model, out_dir / files[f"model:{name}"])
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    return Artifact(NAME, spec.adapter_mode.value, spec.quant.value, list(task.adapters), files, None, meta)


def _export_graph(task: DecoderTask, spec: ExportSpec, modules: list[str]):
    """torch.onnx.export (dynamo) of the dynamic-KV decoder; returns a quantized ModelProto."""
    import onnx
    import torch
    from onnx import numpy_helper

    from ..tasks.decoder import DynamicKVDecoder, example_inputs

    wrapper = DynamicKVDecoder(task.model, modules).eval()
    ids, pos, past, lora = example_inputs(task)
    seq, past_len = torch.export.Dim("seq", min=1, max=32768), torch.export.Dim("past", min=0, max=32768)
    # One rank symbol per module: an adapter may leave some modules at rank 0 (their defaults)
    # while others have rank 8, and a shared symbol lets onnxruntime reuse buffers wrongly.
    ranks = [torch.export.Dim(f"rank_{i}", min=0, max=1024) for i in range(len(modules))]
    dyn = {"input_ids": {1: seq}, "position_ids": {1: seq},
           "past": [({2: past_len}, {2: past_len}) for _ in range(task.num_layers)],
           "lora": [({0: r}, {1: r}) for r in ranks]}
    args = (ids, pos, past, lora)
    if not modules:  # fused or no adapters: the LoRA argument is left out entirely
        args, dyn = args[:3], {k: v for k, v in dyn.items() if k != "lora"}
    L = task.num_layers
    input_names = ["input_ids", "position_ids"] + kv_names(L, "past") + lora_input_names(modules)
    output_names = ["logits"] + kv_names(L, "present")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        try:
            with _exporter_quiet():
                program = torch.onnx.export(
                    wrapper, args, dynamic_shapes=dyn, dynamo=True, opset_version=spec.opset,
                    input_names=input_names, output_names=output_names, verbose=False, optimize=True)
        except Exception as e:  # the exporter raises many types; name the family and the first line
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportFailure(f"ONNX export of family {task.info.family.model_type} failed: {first}",
                                task.info.path, "report this model; try --backend executorch") from None
        tmp_file = Path(tmp) / "model.onnx"
        program.save(str(tmp_file), external_data=True)
        model = onnx.load(str(tmp_file))  # loads the external weights into memory
    # Zero-rank defaults: the base graph runs with no adapter, and onnxruntime's Python API
    # accepts feeds that leave the LoRA inputs out.
    lora_set = set(lora_input_names(modules))
    for inp in model.graph.input:
        if inp.name in lora_set:
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(dims, np.float32), inp.name))
    if spec.quant is not Quant.NONE:
        model = _quantize(model, spec)
    return model


@contextlib.contextmanager
def _exporter_quiet():
    """The dynamo exporter prints its steps and warns once per rank symbol; memlora shows its own
    progress, and a failure still raises with the exporter's message."""
    import logging

    # "torchvision is not installed. Skipping torchvision::roi_align": true, and irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _quantize(model, spec: ExportSpec):
    import logging

    root_level = logging.getLogger().level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer module turns the root logger to INFO on import and logs every node.
    logging.getLogger().setLevel(root_level)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

    bits = 8 if spec.quant is Quant.INT8 else 4
    # accuracy_level=4 (int8 compute): without it 8-bit decode ran 12x slower than fp32 here.
    q = MatMulNBitsQuantizer(model, bits=bits, block_size=spec.group_size, is_symmetric=True, accuracy_level=4)
    q.process()
    return q.model.model


def _save(model, path: Path) -> dict[str, int]:
    """Save (weights beside the graph when large) and return an op-type histogram."""
    import onnx

    # The exporter stores a source stack trace per node; it is a third of a small model's file.
    for node in model.graph.node:
        del node.metadata_props[:]
    size = model.ByteSize()  # serializes the whole model: once is enough
    big = size < 0 or size > _EXTERNAL_DATA_BYTES
    onnx.save_model(model, str(path), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def write_onnx_adapter(adapter, path: Path) -> None:
    """Write one ``.onnx_adapter``: tensors named exactly as the base graph's LoRA inputs, B pre-scaled."""
    import onnxruntime as ort

    params = {}
    for module, lw in adapter.weights.items():
        params[f"lora.{module}.A"] = ort.OrtValue.ortvalue_from_numpy(lw.A.contiguous().numpy())
        params[f"lora.{module}.B"] = ort.OrtValue.ortvalue_from_numpy(lw.scaled_B().numpy())
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(params)
    fmt.export_adapter(str(path))


def load(artifact: Artifact, root: Path, threads: int | None = None) -> "OnnxRunner":
    """Open an exported ONNX artifact as a Runner."""
    return OnnxRunner(artifact, Path(root), threads)


class OnnxRunner:
    """Runner over onnxruntime CPU. Fused: one session per adapter, opened on switch (one in
    memory at a time). External: one session, adapters activated per run."""

    def __init__(self, artifact: Artifact, root: Path, threads: int | None = None):
        import onnxruntime as ort

        self._ort = ort
        self.artifact, self.root = artifact, root
        self.adapters = list(artifact.adapters)
        self.max_seq_len = artifact.max_seq_len
        self._opts = ort.SessionOptions()
        self._opts.log_severity_level = 3  # the LoRA inputs-with-initializers warning is expected
        if threads:
            self._opts.intra_op_num_threads = threads
        self._external = artifact.adapter_mode == AdapterMode.EXTERNAL.value
        self._session = None
        self._session_key: str | None = None
        self._lora: dict[str, object] = {}
        if self._external:
            self._session = self._open(artifact.files["model"])
            for name in self.adapters:
                la = ort.LoraAdapter()
                la.Load(str(root / artifact.files[f"adapter:{name}"]))
                self._lora[name] = la
        self._run_options = None
        self.set_adapter(self.adapters[0] if self.adapters else None)

    def _open(self, rel: str):
        path = self.root / rel
        if not path.is_file():
            raise MemloraError("exported model file missing", path, "re-run memlora export")
        return self._ort.InferenceSession(str(path), self._opts, providers=["CPUExecutionProvider"])

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
            if self._session_key != name:
                self._session = None  # free the previous model before opening the next
                self._session = self._open(self.artifact.files[f"model:{name}"])
                self._session_key = name
        self.active = name
        self.reset()

    def reset(self) -> None:
        past = [i for i in self._session.get_inputs() if i.name.startswith("past.")]
        self._past = {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32) for i in past}
        # present.L.key feeds past.L.key next step; worked out once per session, not per token.
        self._past_names = ["past." + o.name.split(".", 1)[1] for o in self._session.get_outputs()[1:]]
        self._pos = 0

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        n = len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int64),
                 "position_ids": np.arange(self._pos, self._pos + n, dtype=np.int64)[None], **self._past}
        outs = self._session.run(None, feeds, self._run_options)
        self._past.update(zip(self._past_names, outs[1:]))
        self._pos += n
        return outs[0][0]

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._session = None
        self._lora.clear()


# --- Sentence embedder (memlora.tasks.embedder): a separate, small graph -------------------------

def export_encoder(task, out_dir: Path, opset: int = 18) -> dict:
    """Export an :class:`~memlora.tasks.embedder.EmbedderTask` to ``out_dir/model.onnx``.

    Inputs ``input_ids, attention_mask [batch, seq]`` (int64), output ``embeddings [batch, dim]``.
    Returns ``{"files": {"model": "model.onnx"}, "ops": {...}}`` (paths relative to ``out_dir``).
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=1, max=task.max_length)
    dyn = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad(), _exporter_quiet():
        try:
            program = torch.onnx.export(task.module, task.example_inputs(), dynamic_shapes=dyn, dynamo=True,
                                        opset_version=opset, input_names=["input_ids", "attention_mask"],
                                        output_names=["embeddings"], verbose=False, optimize=True)
        except Exception as e:  # the exporter raises many types; keep its first line
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ExportFailure(f"ONNX export of the embedder failed: {first}", task.path,
                                "use --embedder tiny or a BERT-like encoder") from None
    model = program.model_proto
    return {"files": {"model": "model.onnx"}, "ops": _save(model, out_dir / "model.onnx")}


def load_encoder(model_path: Path, threads: int | None = None):
    """Open an exported embedder graph: returns ``encode(input_ids, attention_mask) -> [batch, dim]``."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise MemloraError("exported embedder file missing", model_path, "re-run memlora export --embedder")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])

    def encode(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
        return session.run(["embeddings"], feeds)[0]

    return encode
