"""ExecuTorch backend: a static-KV-cache decoder lowered to XNNPACK, one ``.pte`` per adapter.

external mode (program-data separation): the base weights go to ONE ``foundation.ptd`` shared by
every adapter; each adapter is a small ``<adapter>.pte`` holding its graph and its own LoRA A/B
(separate low-rank matmuls, kept float). The ``.ptd`` each adapter's lowering produces is checked
to be byte-identical before it is written once. The Python runtime passes one data file per
program; Android's ``LlmModule(modelPath, tokenizerPath, temperature, dataFiles)`` takes a list.
fused mode: one self-contained ``<adapter>.pte`` per adapter, LoRA merged into the weights.
Quantization: torchao 8da4w (``int4``: int8 dynamic activations, int4 weights in groups of
``group_size``) or 8da8w (``int8``) on the base linears only; weight-only torchao configs lowered
to XNNPACK gave wrong outputs here, so they are not offered.
Attention: ExecuTorch's LLM custom ops (``llama::update_cache`` + ``llama::custom_sdpa``) where
a layer allows, plain math where it does not (Gemma2's logit soft-capping); see
``memlora.tasks.static_decoder``.
"""
from __future__ import annotations

import hashlib
import re
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import AdapterMode, ExportSpec, Quant
from ..errors import ExportFailure, MemloraError
from ..tasks.decoder import DecoderTask
from ..tasks.lora import LoraLinear, fused
from .base import Artifact

NAME = "executorch"
FOUNDATION = "foundation"  # tag of the shared weights -> foundation.ptd


def available() -> str | None:
    """None if executorch (with XNNPACK and the pybindings runtime) and torchao import."""
    try:
        import executorch.backends.xnnpack.partition.xnnpack_partitioner  # noqa: F401
        import executorch.extension.pybindings.portable_lib  # noqa: F401
        import torchao  # noqa: F401
    except ImportError as e:
        return f"missing package {e.name} (pip install memlora[executorch])"
    return None


# ---------------------------------------------------------------------------------------------
# export


class BakedLoraLinear(LoraLinear):
    """``LoraLinear`` whose A and B are buffers baked into one adapter's program.

    Registered buffers (not a tuple attribute) so ``torch.export`` lifts them as named
    constants, which the foundation tagger recognises by the ``lora_`` in their names.
    """

    def __init__(self, base, a, b):
        super().__init__(base)
        self.register_buffer("lora_A", a.detach().clone().contiguous())
        self.register_buffer("lora_B", b.detach().clone().contiguous())

    def forward(self, x):
        import torch.nn.functional as F

        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B)


def _bake_adapter(model, adapter) -> None:
    """Wrap every module ``adapter`` targets in a BakedLoraLinear (B pre-scaled)."""
    for path, lw in adapter.weights.items():
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        setattr(parent, attr, BakedLoraLinear(getattr(parent, attr), lw.A.float(), lw.scaled_B().float()))


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


def estimate_memory(task: DecoderTask, spec: ExportSpec) -> tuple[int, int | None]:
    """(bytes the export is expected to need, bytes available): params x 4 bytes x ~3 (the
    model, the copy that is lowered, the serialized program), plus the static caches."""
    params = sum(p.numel() for p in task.model.parameters())
    cache = 2 * task.num_layers * task.kv_heads * task.head_dim * spec.max_seq_len * 4
    need = params * 4 * 3 + cache
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    return need, avail


def _warn_memory(task: DecoderTask, spec: ExportSpec) -> dict:
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


def export(task: DecoderTask, spec: ExportSpec, out_dir: Path) -> Artifact:
    """Export ``task`` under ``out_dir/executorch/<mode>-<quant>/`` and describe the files."""
    out_dir = Path(out_dir)
    sub = Path("executorch") / f"{spec.adapter_mode.value}-{spec.quant.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    meta: dict = {"memory": _warn_memory(task, spec), "runtime": "xnnpack", "per_adapter": {}}
    files: dict[str, str] = {}
    t0 = time.perf_counter()
    external = spec.adapter_mode is AdapterMode.EXTERNAL
    foundation_sha: str | None = None
    for name, adapter in task.adapters.items():
        t1 = time.perf_counter()
        if external:
            program, info = _lower(task, spec, adapter=adapter)
        else:
            with fused(task.model, adapter):
                program, info = _lower(task, spec, adapter=None)
        rel = sub / f"{name}.pte"
        (out_dir / rel).write_bytes(program.buffer)
        data = _data_files(program)
        if external:
            blob = data.get(f"{FOUNDATION}.ptd")
            if blob is None:
                raise ExportFailure(f"ExecuTorch external export of {task.info.family.model_type} wrote no "
                                    "foundation .ptd", fix="report this model; use --adapter-mode fused")
            sha = info["foundation_sha256"] = hashlib.sha256(blob).hexdigest()
            if foundation_sha is None:
                foundation_sha = sha
                files[FOUNDATION] = str(sub / f"{FOUNDATION}.ptd")
                (out_dir / files[FOUNDATION]).write_bytes(blob)
            elif sha != foundation_sha:
                raise ExportFailure(
                    f"the foundation .ptd for adapter {name!r} differs from the first adapter's "
                    f"(sha256 {sha[:12]} vs {foundation_sha[:12]}): the base weights are not shared",
                    fix="report this model; use --adapter-mode fused")
            files[f"adapter:{name}"] = str(rel)
        else:
            if data:
                raise ExportFailure(f"fused ExecuTorch export wrote unexpected data files {sorted(data)}")
            files[f"model:{name}"] = str(rel)
        info["export_seconds"] = round(time.perf_counter() - t1, 2)
        info["pte_bytes"] = (out_dir / rel).stat().st_size
        meta["per_adapter"][name] = info
    first = next(iter(meta["per_adapter"].values()), {})
    for key in ("delegation", "attention", "quantized_linears", "runner_metadata"):
        if key in first:
            meta[key] = first[key]  # the same graph for every adapter but its LoRA layers
    meta["file_bytes"] = {role: (out_dir / rel).stat().st_size for role, rel in files.items()}
    if external:
        meta["foundation"] = {
            "sha256": foundation_sha, "identical_across_adapters": True, "adapters": list(task.adapters),
            "note": "each adapter .pte loads with this one .ptd; Python pybindings take one data file "
                    "(_load_for_executorch(pte, data_path=ptd)); Android LlmModule(dataFiles=[...]) "
                    "takes several",
        }
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    return Artifact(NAME, spec.adapter_mode.value, spec.quant.value, list(task.adapters), files,
                    spec.max_seq_len, meta)


def _data_files(program) -> dict[str, bytes]:
    """The ``.ptd`` files a program would write, by file name (``write_tensor_data_to_file``
    without touching the disk)."""
    program.buffer  # noqa: B018  (serializing fills the data files)
    data = getattr(program, "_tensor_data", None) or {}
    return {(k if k.endswith(".ptd") else k + ".ptd"): bytes(v) for k, v in data.items()}


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _where(chain: list[BaseException]) -> str:
    """The innermost model-code frame, e.g. ``modeling_gemma2.py:142 in forward``: from the
    tracebacks, or from the "from user code" frames torch.export prints into its messages."""
    found = ""
    for exc in reversed(chain):  # the innermost exception first
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)]
        frames += [(m[0], int(m[1]), m[2]) for m in _FRAME.findall(str(exc))]
        for filename, lineno, fn in reversed(frames):
            if "transformers/models" in filename or "memlora/tasks" in filename:
                return f"{Path(filename).name}:{lineno} in {fn}"
    return found


def _fail(task: DecoderTask, stage: str, exc: BaseException) -> ExportFailure:
    chain = _chain(exc)
    # torch.export wraps the real error ("Unsupported: Observed exception"): report the
    # innermost exception that did not come from torch itself, else the outer one.
    root = next((e for e in reversed(chain) if not type(e).__module__.startswith("torch")), exc)
    text = str(root).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:300]
    where = _where(chain)
    return ExportFailure(
        f"ExecuTorch {stage} of family {task.info.family.model_type} failed"
        f"{' at ' + where if where else ''}: {type(root).__name__}{': ' + first if first else ''}",
        task.info.path, "report this model; try --backend onnx, or --adapter-mode fused")


def _lower(task: DecoderTask, spec: ExportSpec, adapter=None):
    """Wrap, (bake LoRA,) quantize, export, lower to XNNPACK, emit. Returns (program, info)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from ..stock.executorch_meta import constant_methods
    from ..tasks.static_decoder import delegable_activations, delegable_norms, dynamic_shapes, example_inputs, static_decoder

    external = adapter is not None
    info: dict = {}
    with torch.no_grad():
        try:
            wrapper = static_decoder(task.model, spec.max_seq_len, "auto")  # a copy: task.model untouched
        except Exception as e:
            raise _fail(task, "wrapping", e) from None
        info["attention"] = wrapper.attention_summary
        info["norms_as_linear"] = delegable_norms(wrapper)
        info["gelu_tanh_explicit"] = delegable_activations(wrapper)
        if external:
            _bake_adapter(wrapper.model, adapter)
        if spec.quant is not Quant.NONE:
            info["quantized_linears"] = _quantize(wrapper, spec)
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
            raise _fail(task, "torch.export", e) from None
        info["seconds_torch_export"] = round(time.perf_counter() - tp, 2)
        tp = time.perf_counter()
        try:
            edge = to_edge_transform_and_lower(
                ep, partitioner=[XnnpackPartitioner()], constant_methods=runner_metadata,
                compile_config=EdgeCompileConfig(_check_ir_validity=False))
            info["delegation"] = delegation_report(edge.exported_program().graph_module)
            program = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                external_constants=_foundation_tag if external else False))
            program.buffer  # serialize now, so failures land here  # noqa: B018
        except Exception as e:
            raise _fail(task, "lowering to XNNPACK", e) from None
        info["seconds_lower"] = round(time.perf_counter() - tp, 2)
    return program, info


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


# ---------------------------------------------------------------------------------------------
# runtime


def _import_runtime():
    """The pybindings runtime with the LLM custom ops registered (needed before loading)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::*)
    from executorch.extension.pybindings import portable_lib

    return portable_lib


def load(artifact: Artifact, root: Path) -> "ExecuTorchRunner":
    """Open an exported ExecuTorch artifact as a Runner."""
    return ExecuTorchRunner(artifact, Path(root))


class ExecuTorchRunner:
    """Runner over the ExecuTorch pybindings runtime (XNNPACK + portable + LLM custom ops).

    One program is loaded at a time: external mode loads ``<adapter>.pte`` with the shared
    ``foundation.ptd``; fused mode loads the adapter's self-contained ``.pte``. The K/V cache
    lives inside the program (in-place buffers); positions past the current one are never read,
    so resetting is rewinding the position to 0, and switching adapter also rewinds.
    """

    def __init__(self, artifact: Artifact, root: Path):
        self._rt = _import_runtime()
        self.artifact, self.root = artifact, root
        self.adapters = list(artifact.adapters)
        self.max_seq_len = artifact.max_seq_len
        self._external = artifact.adapter_mode == AdapterMode.EXTERNAL.value
        self._data = None
        if self._external:
            self._data = self._path(artifact.files[FOUNDATION])
        self._module = None
        self._module_key: str | None = None
        self.active: str | None = None
        self._pos = 0
        if self.adapters:
            self.set_adapter(self.adapters[0])

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        if not path.is_file():
            raise MemloraError("exported ExecuTorch file missing", path, "re-run memlora export")
        return path

    def set_adapter(self, name: str | None) -> None:
        if name is None:
            raise MemloraError("ExecuTorch exports hold one program per adapter, no bare base",
                               fix="pick an adapter")
        if name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if self._module_key != name:
            role = f"adapter:{name}" if self._external else f"model:{name}"
            pte = self._path(self.artifact.files[role])
            self._module = None  # free the previous program first
            kwargs = {"data_path": str(self._data)} if self._data is not None else {}
            self._module = self._rt._load_for_executorch(str(pte), **kwargs)
            self._module_key = name
        self.active = name
        self.reset()

    def reset(self) -> None:
        self._pos = 0

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        import torch

        ids = list(ids)
        if not ids:
            raise ValueError("prefill needs at least one token")
        if self.max_seq_len is not None and self._pos + len(ids) > self.max_seq_len:
            raise MemloraError(
                f"KV cache full: {self._pos} cached + {len(ids)} new tokens > max_seq_len {self.max_seq_len}",
                fix="reset() between prompts, shorten the prompt, or re-export with a larger --max-seq-len")
        chunk = (self.max_seq_len or len(ids) + 1) - 1  # the program takes at most max_seq_len-1 at once
        rows = []
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            out = self._module.forward([torch.tensor([part], dtype=torch.long),
                                        torch.tensor([self._pos], dtype=torch.long)])
            rows.append(out[0][0].float().numpy())
            self._pos += len(part)
        return np.concatenate(rows, axis=0)

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._module = None
        self._module_key = None
