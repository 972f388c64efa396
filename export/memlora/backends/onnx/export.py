"""ONNX export side: the dynamo exporter, MatMulNBits quantization, ``.onnx_adapter`` files,
and the sentence-embedder graph. See the package docstring for the layout."""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ...core.config import ExportSpec, Quant
from ...tasks.names import kv_names, lora_input_names
from ..export_job import ExportJob, export_failure
from .attention import AttentionShape, attention_shape, fuse_group_query_attention
from .fusions import fuse_matmul_bias, fuse_rms_norms, fuse_skip_norms
from .quantize import quant_meta, quantize_model
from .rotary import fuse_rotary

_EXTERNAL_DATA_BYTES = 1 << 30  # beyond this, weights go to a side file (protobuf stops at 2 GiB)


def export_external(job: ExportJob) -> None:
    """``base.onnx`` with LoRA inputs (one pair per :class:`~memlora.tasks.packed.LoraUnit`: q/k/v
    and gate/up packed), and one ``.onnx_adapter`` per adapter in the same layout."""
    from ...tasks.lora import remove_lora
    from ...tasks.packed import lora_units, packable

    task = job.task
    groups = packable(task.model)
    units = lora_units(task.model, task.lora_modules(), groups)
    try:
        model = _export_graph(job, groups, units)
    finally:
        remove_lora(task.model)
    job.meta.update(opset=job.spec.onnx.opset, ops=_save(model, job.add("model", "base.onnx")),
                    lora_inputs=len(units) * 2, packed_groups=len(groups), **quant_meta(job.spec))
    for name, adapter in task.adapters.items():
        write_onnx_adapter(adapter, job.add(f"adapter:{name}", f"{name}.onnx_adapter"), units)


def export_fused(job: ExportJob, name: str) -> None:
    """``<name>/<name>.onnx`` with the adapter fused into the weights (fused by the caller). One
    folder per fused model: ONNX Runtime GenAI opens a folder (``memlora.stock``)."""
    from ...tasks.packed import packable

    groups = packable(job.task.model)
    model = _export_graph(job, groups, [])
    path = job.add(f"model:{name}", f"{name}/{name}.onnx")
    path.parent.mkdir(exist_ok=True)
    job.meta.update(opset=job.spec.onnx.opset, ops=_save(model, path), packed_groups=len(groups),
                    **quant_meta(job.spec))


def _export_graph(job: ExportJob, groups: list[tuple[str, ...]], units: list):
    """torch.onnx.export (dynamo) of the dynamic-KV decoder with ``groups`` packed and one pair of
    LoRA inputs per unit; returns a quantized ModelProto."""
    import onnx
    import torch

    from ...tasks.decoder import DynamicKVDecoder, example_inputs
    from ...tasks.grouped_attention import grouped_attention_for
    from ...tasks.packed import packed

    task, spec = job.task, job.spec
    modules = [u.name for u in units]
    ids, pos, past, lora = example_inputs(task, units=units)
    seq, past_len = torch.export.Dim("seq", min=1, max=32768), torch.export.Dim("past", min=0, max=32768)
    # One rank symbol per unit: an adapter may leave some units at rank 0 (their defaults)
    # while others have rank 8, and a shared symbol lets onnxruntime reuse buffers wrongly.
    ranks = [torch.export.Dim(f"rank_{i}", min=0, max=1024) for i in range(len(modules))]
    dyn = {"input_ids": {1: seq}, "position_ids": {1: seq},
           "past": [({2: past_len}, {2: past_len}) for _ in range(task.num_layers)],
           "lora": [({1: r}, {0: r}) for r in ranks]}  # A^T [in, r], B^T [r, out]
    args = (ids, pos, past, lora)
    if not modules:  # fused or no adapters: the LoRA argument is left out entirely
        args, dyn = args[:3], {k: v for k, v in dyn.items() if k != "lora"}
    L = task.num_layers
    input_names = ["input_ids", "position_ids"] + kv_names(L, "past") + lora_input_names(modules)
    output_names = ["logits"] + kv_names(L, "present")
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        try:
            # Grouped attention: no repeat_kv copy of the whole cache per layer and step.
            with _exporter_quiet(), grouped_attention_for(task.model), packed(task.model, groups) as packs:
                wrapper = DynamicKVDecoder(task.model, modules, packs).eval()
                program = torch.onnx.export(
                    wrapper, args, dynamic_shapes=dyn, dynamo=True, opset_version=spec.onnx.opset,
                    input_names=input_names, output_names=output_names, verbose=False, optimize=True)
        except Exception as e:  # the exporter raises many types; one line names the root cause
            raise job.fail("export", e, "report this model; try --backend executorch") from None
        tmp_file = Path(tmp) / "model.onnx"
        program.save(str(tmp_file), external_data=True)
        model = onnx.load(str(tmp_file))  # loads the external weights into memory
    model, fused = finish_decoder(model, modules, spec, attention_shape(task, spec.max_seq_len))
    job.meta["fused_ops"] = fused
    if fused.get("attention") or fused.get("rotary"):  # tables of this many rows: the runner's limit
        job.meta["rotary_positions"] = spec.max_seq_len
    return model


def finish_decoder(model, modules: list[str], spec: ExportSpec, attention: AttentionShape | None = None):
    """Zero-rank defaults for the LoRA inputs (the base graph runs with no adapter, and
    onnxruntime's Python API accepts feeds that leave them out), the graph rewrites, then
    ``--quant``. ``attention`` (text decoders, whose rotary reads ``position_ids`` alone) enables
    the rotary fusion, and with ``--onnx-gqa`` the whole-attention one. Returns the model and
    how many of each rewrite it took."""
    from onnx import numpy_helper

    lora_set = set(lora_input_names(modules))
    for inp in model.graph.input:
        if inp.name in lora_set:
            dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
            model.graph.initializer.append(numpy_helper.from_array(np.zeros(dims, np.float32), inp.name))
    fused = _rewrite(model, spec, attention) if spec.onnx.rewrites else {}
    if spec.quant is not Quant.NONE:
        model = quantize_model(model, spec)
        if spec.onnx.rewrites:  # (MatMulNBits exists only now)
            fused["matmul_bias"] = fuse_matmul_bias(model)
    return model, fused


def _rewrite(model, spec: ExportSpec, attention: AttentionShape | None) -> dict[str, int]:
    """The float graph's rewrites, in place (before quantizing: the quantizer only looks at
    MatMul/Gather); returns how many of each."""
    fused = {"rms_norm": fuse_rms_norms(model)}
    if attention is not None:
        if spec.onnx.fuse_attention:  # first: it takes the rotary with it
            fused["attention"] = fuse_group_query_attention(model, attention)
        fused["rotary"] = fuse_rotary(model, attention.head_dim, attention.max_positions)
    fused["skip_norm"] = fuse_skip_norms(model)  # after the RMSNorm fusion it extends
    return fused


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


def write_onnx_adapter(adapter, path: Path, units: list | None = None) -> None:
    """Write one ``.onnx_adapter``: tensors named exactly as the base graph's LoRA inputs, in their
    layout (A^T, B^T with B pre-scaled: :func:`memlora.tasks.lora.lora_inputs`), one pair per
    module, or per :class:`~memlora.tasks.packed.LoraUnit` of ``units`` (packed groups)."""
    import onnxruntime as ort

    from ...tasks.lora import lora_inputs
    from ...tasks.packed import unit_tensors

    if units is None:
        pairs = {m: lora_inputs(lw) for m, lw in adapter.weights.items()}
    else:  # a unit the adapter does not touch keeps the graph's rank-0 default
        pairs = {u.name: t for u in units if (t := unit_tensors(u, adapter)) is not None}
    params = {}
    for name, (a_t, b_t) in pairs.items():
        params[f"lora.{name}.A"] = ort.OrtValue.ortvalue_from_numpy(a_t.numpy())
        params[f"lora.{name}.B"] = ort.OrtValue.ortvalue_from_numpy(b_t.numpy())
    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(1)
    fmt.set_model_version(1)
    fmt.set_parameters(params)
    fmt.export_adapter(str(path))


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
        except Exception as e:  # the exporter raises many types; one line names the root cause
            raise export_failure("onnx", "export", e, None, task.path,
                                 "use --embedder tiny or a BERT-like encoder") from None
    model = program.model_proto
    return {"files": {"model": "model.onnx"}, "ops": _save(model, out_dir / "model.onnx")}


