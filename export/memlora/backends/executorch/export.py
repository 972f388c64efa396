"""ExecuTorch export side: a static-KV-cache decoder lowered to XNNPACK, one ``.pte`` per adapter,
the base weights of external mode in one shared ``foundation.ptd``. See the package docstring."""
from __future__ import annotations

import contextlib
import hashlib
import time

from ...core.config import ExportSpec, Quant
from ...core.errors import ExportFailure
from ..export_job import ExportJob
from . import FOUNDATION, report

_FIX = "report this model; try --backend onnx, or --adapter-mode fused"


def _is_lora_node(node) -> bool:
    return "lora_" in node.name.lower()


def _foundation_tag(node):
    """Constant tag: base weights -> foundation.ptd, LoRA weights -> stay in the .pte."""
    return None if _is_lora_node(node) else FOUNDATION


def _tag_placeholders(ep) -> None:
    """Tag the weights XNNPACK serialises: base weights for the foundation file, LoRA stays in
    the .pte. (Tagging the lifted placeholders directly; ExecuTorch's LLM flow tags an unlifted
    copy and re-exports it, which costs a second torch.export.)"""
    sig = ep.graph_signature
    consts = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in consts:
            node.meta.setdefault("custom", {})["delegate_constant_tag"] = _foundation_tag(node)


def _quantize(wrapper, spec: ExportSpec) -> int:
    """torchao 8da4w / 8da8w on the base nn.Linear layers (LoRA uses F.linear on buffers, so it
    is never touched). Returns how many linears were quantized."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    count = 0

    def keep(m, fqn):
        nonlocal count
        ok = isinstance(m, torch.nn.Linear) and m.in_features % spec.group_size == 0
        count += ok
        return ok

    dtype = torch.int4 if spec.quant is Quant.INT4 else torch.int8
    with torch.no_grad():
        quantize_(wrapper, Int8DynamicActivationIntxWeightConfig(
            weight_dtype=dtype, weight_granularity=PerGroup(spec.group_size)), filter_fn=keep)
    return count


def build_wrapper(job: ExportJob):
    """Once per artifact: the static-cache wrapper over a copy of the task's model that SHARES its
    weight tensors (the copy is of modules only: wrapping swaps modules, quantizing replaces a
    weight, neither writes into one), quantized once. Every adapter's program is lowered from it
    with that adapter baked in and taken out again, so no adapter costs a copy of the model.
    Returns (wrapper, graph-wide info)."""
    import copy

    import torch

    from ...tasks.delegable import delegable_activations, delegable_norms
    from ...tasks.static_decoder import static_decoder
    from .table_quant import quantize_table

    task, spec = job.task, job.spec
    shared = {id(t): t for t in (*task.model.parameters(), *task.model.buffers())}
    with torch.no_grad():
        try:
            # Last-position logits: a full-logits output is memory-planned at [max_seq_len, vocab] fp32
            # per loaded program (1.7 GB at qwen2.5-0.5b), and the runners only sample the last row.
            wrapper = static_decoder(copy.deepcopy(task.model, shared), spec.max_seq_len, "auto", copy_model=False,
                                     last_logits_only=True)
        except Exception as e:
            raise job.fail("wrapping", e, _FIX) from None
        job.meta["logits"] = "last" if wrapper.last_logits_only else "all"  # what the runner returns per prefill
        info: dict = dict(attention=wrapper.attention_summary, norms_as_linear=delegable_norms(wrapper),
                          gelu_tanh_explicit=delegable_activations(wrapper))
        if spec.quant is not Quant.NONE:
            info["quantized_linears"] = _quantize(wrapper, spec)
            info["table_quant"] = quantize_table(wrapper, spec.group_size)  # after the linears: the head keeps its own
    return wrapper, info


@contextlib.contextmanager
def _baked(wrapper, adapter):
    """``adapter``'s LoRA wrapped around its target modules for the block, then the bare modules back."""
    from ...tasks.lora import bake_adapter

    if adapter is None:
        yield wrapper
        return
    bare = {path: wrapper.model.get_submodule(path) for path in adapter.weights}
    bake_adapter(wrapper.model, adapter)
    try:
        yield wrapper
    finally:
        for path, module in bare.items():
            parent, _, attr = path.rpartition(".")
            setattr(wrapper.model.get_submodule(parent), attr, module)


def export_one(job: ExportJob, name: str, wrapper, graph_info: dict, adapter=None) -> None:
    """Lower one adapter's program from ``wrapper`` (``adapter`` baked in; ``None``: fused already)
    and write its ``.pte`` (and, external, the shared ``.ptd``); per-adapter figures go to ``job.meta``."""
    t1 = time.perf_counter()
    with _baked(wrapper, adapter):
        program, info = _lower(job, wrapper, dict(graph_info), external=adapter is not None)
    pte = job.add(f"adapter:{name}" if job.external else f"model:{name}", f"{name}.pte")
    pte.write_bytes(program.buffer)
    data = _data_files(program)
    del program  # its serialized copy of the weights; the data cords below are what is left
    if job.external:
        _write_foundation(job, name, data, info)
    elif data:
        raise ExportFailure(f"fused ExecuTorch export wrote unexpected data files {sorted(data)}")
    info["export_seconds"] = round(time.perf_counter() - t1, 2)
    info["pte_bytes"] = pte.stat().st_size
    job.meta["per_adapter"][name] = info
    _forget_traces()


def _forget_traces() -> None:
    """Drop what ``torch.export`` (strict: dynamo) cached while tracing this program: the next
    adapter traces anew, and the peak RSS of a three-adapter export at 0.5B went 5.69 -> 5.57 GiB."""
    import gc

    import torch

    torch._dynamo.reset()
    gc.collect()


def _write_foundation(job: ExportJob, name: str, data: dict, info: dict) -> None:
    """The first adapter writes ``foundation.ptd``; every later one must produce the same bytes.
    Hashed and written piece by piece (a ``bytes()`` of the whole file would be one more copy)."""
    blob = data.get(f"{FOUNDATION}.ptd")
    if blob is None:
        raise ExportFailure(f"ExecuTorch external export of {job.task.info.family.model_type} wrote no "
                            "foundation .ptd", fix="report this model; use --adapter-mode fused")
    digest = hashlib.sha256()
    for piece in _pieces(blob):
        digest.update(piece)
    sha = info["foundation_sha256"] = digest.hexdigest()
    first = job.meta.get("foundation_sha256")
    if first is None:
        job.meta["foundation_sha256"] = sha
        with open(job.add(FOUNDATION, f"{FOUNDATION}.ptd"), "wb") as f:
            for piece in _pieces(blob):
                f.write(piece)
    elif sha != first:
        raise ExportFailure(
            f"the foundation .ptd for adapter {name!r} differs from the first adapter's "
            f"(sha256 {sha[:12]} vs {first[:12]}): the base weights are not shared",
            fix="report this model; use --adapter-mode fused")


def _pieces(blob):
    """The buffers of an ExecuTorch ``Cord`` (or one bytes object) in order."""
    return getattr(blob, "_buffers", None) or [bytes(blob)]


def summarize(job: ExportJob) -> None:
    """Graph-wide figures from the first adapter, file sizes, and the foundation note."""
    first = next(iter(job.meta["per_adapter"].values()), {})
    for key in ("delegation", "attention", "quantized_linears", "table_quant", "runner_metadata"):
        if key in first:
            job.meta[key] = first[key]  # the same graph for every adapter but its LoRA layers
    job.meta["file_bytes"] = {role: job.path(role).stat().st_size for role in job.files}
    sha = job.meta.pop("foundation_sha256", None)
    if job.external:
        job.meta["foundation"] = {
            "sha256": sha, "identical_across_adapters": True, "adapters": list(job.task.adapters),
            "note": "each adapter .pte loads with this one .ptd; Python pybindings take one data file "
                    "(_load_for_executorch(pte, data_path=ptd)); Android LlmModule(dataFiles=[...]) "
                    "takes several",
        }


def _data_files(program) -> dict:
    """The ``.ptd`` files a program would write, by file name, as the program's own buffers
    (``Cord``; ``write_tensor_data_to_file`` without touching the disk)."""
    program.buffer  # noqa: B018  (serializing fills the data files)
    data = getattr(program, "_tensor_data", None) or {}
    return {(k if k.endswith(".ptd") else k + ".ptd"): v for k, v in data.items()}


def _lower(job: ExportJob, wrapper, info: dict, external: bool):
    """torch.export the wrapper as it is now, lower it to XNNPACK, emit. Returns (program, info)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from ...stock.executorch_meta import constant_methods
    from ...tasks.static_decoder import dynamic_shapes, example_inputs

    task, spec = job.task, job.spec
    with torch.no_grad():
        args, dyn = example_inputs(), dynamic_shapes(spec.max_seq_len)
        # The stock runner's metadata (memlora.stock): constants in the .pte, not in the .ptd.
        runner_metadata = info["runner_metadata"] = constant_methods(
            task, spec.max_seq_len, uses_custom_sdpa="custom" in wrapper.kinds)
        tp = time.perf_counter()
        try:
            ep = torch.export.export(wrapper, args, dynamic_shapes=dyn, strict=True)
            if spec.quant is not Quant.NONE:
                ep = ep.run_decompositions({})  # unwrap torchao's quantized tensor subclasses
            if external:
                _tag_placeholders(ep)
        except Exception as e:
            raise job.fail("torch.export", e, _FIX) from None
        info["seconds_torch_export"] = round(time.perf_counter() - tp, 2)
        tp = time.perf_counter()
        try:
            edge = to_edge_transform_and_lower(
                ep, partitioner=[XnnpackPartitioner()], constant_methods=runner_metadata,
                compile_config=EdgeCompileConfig(_check_ir_validity=False))
            del ep
            info["delegation"] = report.delegation_report(edge.exported_program().graph_module)
            program = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                external_constants=_foundation_tag if external else False))
            del edge
            program.buffer  # serialize now, so failures land here  # noqa: B018
        except Exception as e:
            raise job.fail("lowering to XNNPACK", e, _FIX) from None
        info["seconds_lower"] = round(time.perf_counter() - tp, 2)
    return program, info
