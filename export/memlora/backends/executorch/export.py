"""ExecuTorch export side: a static-KV-cache decoder lowered to XNNPACK, one ``.pte`` per adapter,
the base weights of external mode in one shared ``foundation.ptd``. See the package docstring."""
from __future__ import annotations

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


def export_one(job: ExportJob, name: str, adapter=None) -> None:
    """Lower one adapter's program (``adapter`` baked in; ``None``: fused already) and write its
    ``.pte`` (and, external, the shared ``.ptd``); per-adapter figures go to ``job.meta``."""
    t1 = time.perf_counter()
    program, info = _lower(job, adapter)
    pte = job.add(f"adapter:{name}" if job.external else f"model:{name}", f"{name}.pte")
    pte.write_bytes(program.buffer)
    data = _data_files(program)
    if job.external:
        _write_foundation(job, name, data, info)
    elif data:
        raise ExportFailure(f"fused ExecuTorch export wrote unexpected data files {sorted(data)}")
    info["export_seconds"] = round(time.perf_counter() - t1, 2)
    info["pte_bytes"] = pte.stat().st_size
    job.meta["per_adapter"][name] = info


def _write_foundation(job: ExportJob, name: str, data: dict[str, bytes], info: dict) -> None:
    """The first adapter writes ``foundation.ptd``; every later one must produce the same bytes."""
    blob = data.get(f"{FOUNDATION}.ptd")
    if blob is None:
        raise ExportFailure(f"ExecuTorch external export of {job.task.info.family.model_type} wrote no "
                            "foundation .ptd", fix="report this model; use --adapter-mode fused")
    sha = info["foundation_sha256"] = hashlib.sha256(blob).hexdigest()
    first = job.meta.get("foundation_sha256")
    if first is None:
        job.meta["foundation_sha256"] = sha
        job.add(FOUNDATION, f"{FOUNDATION}.ptd").write_bytes(blob)
    elif sha != first:
        raise ExportFailure(
            f"the foundation .ptd for adapter {name!r} differs from the first adapter's "
            f"(sha256 {sha[:12]} vs {first[:12]}): the base weights are not shared",
            fix="report this model; use --adapter-mode fused")


def summarize(job: ExportJob) -> None:
    """Graph-wide figures from the first adapter, file sizes, and the foundation note."""
    first = next(iter(job.meta["per_adapter"].values()), {})
    for key in ("delegation", "attention", "quantized_linears"):
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


def _data_files(program) -> dict[str, bytes]:
    """The ``.ptd`` files a program would write, by file name (``write_tensor_data_to_file``
    without touching the disk)."""
    program.buffer  # noqa: B018  (serializing fills the data files)
    data = getattr(program, "_tensor_data", None) or {}
    return {(k if k.endswith(".ptd") else k + ".ptd"): bytes(v) for k, v in data.items()}


def _lower(job: ExportJob, adapter=None):
    """Wrap, (bake LoRA,) quantize, export, lower to XNNPACK, emit. Returns (program, info)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from ...tasks.lora import bake_adapter
    from ...tasks.delegable import delegable_activations, delegable_norms
    from ...tasks.static_decoder import dynamic_shapes, example_inputs, static_decoder

    task, spec = job.task, job.spec
    external = adapter is not None
    info: dict = {}
    with torch.no_grad():
        try:
            wrapper = static_decoder(task.model, spec.max_seq_len, "auto")  # a copy: task.model untouched
        except Exception as e:
            raise job.fail("wrapping", e, _FIX) from None
        info["attention"] = wrapper.attention_summary
        info["norms_as_linear"] = delegable_norms(wrapper)
        info["gelu_tanh_explicit"] = delegable_activations(wrapper)
        if external:
            bake_adapter(wrapper.model, adapter)
        if spec.quant is not Quant.NONE:
            info["quantized_linears"] = _quantize(wrapper, spec)
        args, dyn = example_inputs(), dynamic_shapes(spec.max_seq_len)
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
                ep, partitioner=[XnnpackPartitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False))
            info["delegation"] = report.delegation_report(edge.exported_program().graph_module)
            program = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                external_constants=_foundation_tag if external else False))
            program.buffer  # serialize now, so failures land here  # noqa: B018
        except Exception as e:
            raise job.fail("lowering to XNNPACK", e, _FIX) from None
        info["seconds_lower"] = round(time.perf_counter() - tp, 2)
    return program, info
