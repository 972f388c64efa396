"""What an ExecuTorch export reports about itself: XNNPACK delegation, and the memory it needs."""
from __future__ import annotations

import warnings
from collections import Counter

from ...core.config import ExportSpec, Quant


# Peak RSS = the fp32 model + the Python/torch/ExecuTorch runtime + LOWERING x the bytes the export
# writes (the torchao codes, XNNPACK's packed copy, the emitted program and its data buffers; the
# process keeps what the lowerings free, so RSS grows by about half a GB per adapter). Quantized:
# fitted on qwen2.5-0.5b int4 external, three adapters, --no-parity, 2026-12-06: 5.57 GiB measured
# (5.69 without the dynamo reset between adapters), 5.66 GiB estimated (the 8.2 GiB of the
# morning's refit was the conformance reference loaded after the lowerings, since moved first). fp32: 3.8 from the 2026-12-02 fit, not re-measured.
# Not counted: with parity on, the PyTorch reference (the fp32 model again) for the whole export.
RUNTIME_BYTES = 600 << 20
LOWERING = {Quant.NONE: 3.8, Quant.INT8: 4.8, Quant.INT4: 4.8}


def estimate_memory(task, spec: ExportSpec) -> tuple[int, int | None]:
    """(bytes the export is expected to need, bytes available). The wrapper shares the model's fp32
    tensors (no copy per adapter), so: the model, the runtime, ``LOWERING`` x the lowered weights
    (int4 / int8 linears and head with their scales, the int8 table; fp32: every weight), the caches."""
    params = sum(p.numel() for p in task.model.parameters())
    cache = 2 * task.num_layers * task.kv_heads * task.head_dim * spec.max_seq_len * 4
    if spec.quant is Quant.NONE:
        lowered = params * 4
    else:
        emb = task.model.get_input_embeddings().weight
        head = getattr(getattr(task.model, "lm_head", None), "weight", None)
        table = emb.numel()
        linears = params - table + (table if head is emb else 0)  # a tied head is quantized as its own copy
        lowered = int((linears + table) * (1 + 4 / spec.group_size))  # 8-bit codes (int4: unpacked) + fp32 scales
    need = params * 4 + RUNTIME_BYTES + int(LOWERING[spec.quant] * lowered) + cache
    return need, available_bytes()


def available_bytes() -> int | None:
    """The kernel's MemAvailable in bytes (Linux); None where there is no /proc/meminfo."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def warn_memory(task, spec: ExportSpec) -> dict:
    need, avail = estimate_memory(task, spec)
    if avail is not None and need > avail:
        msg = (f"ExecuTorch export of {task.info.family.model_type} may run out of memory: it needs "
               f"about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available "
               "(fix: close other programs, export one --quant at a time, or use a larger machine)")
        warnings.warn(msg, ResourceWarning, stacklevel=3)
        try:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]warning:[/yellow] {msg}")
        except ImportError:
            pass
    return {"estimated_bytes": need, "available_bytes": avail}


def delegation_report(graph_module) -> dict:
    """Delegated vs non-delegated operator counts and the number of XNNPACK islands.

    Same counting as ``executorch.devtools.backend_debug.get_delegation_info`` (which needs
    pandas), minus bookkeeping nodes: ``getitem`` (unpacking delegate outputs) and the
    delegate calls themselves are not counted as operators.
    """
    delegated: Counter = Counter()
    outside: Counter = Counter()
    islands = 0

    def op_name(node) -> str:
        target = node.target
        name = getattr(target, "__name__", str(target))
        return name.replace(".default", "")

    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            islands += 1
            for inner in getattr(graph_module, node.name).original_module.graph.nodes:
                if inner.op == "call_function" and op_name(inner) != "getitem":
                    delegated[op_name(inner)] += 1
        elif node.op == "call_function":
            name = op_name(node)
            if name not in ("getitem", "executorch_call_delegate"):
                outside[name] += 1
    return {"islands": islands, "delegated_ops": sum(delegated.values()),
            "non_delegated_ops": sum(outside.values()), "non_delegated_by_op": dict(outside.most_common())}
