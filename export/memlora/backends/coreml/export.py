"""Core ML export side: ``torch.export`` of the stateful decoder, ``ct.convert``, compression, and
the multifunction package. See the package docstring."""
from __future__ import annotations

import contextlib
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from ...core.config import ExportSpec, Precision, Quant
from ...core.errors import MemloraError
from ..export_job import ExportJob
from . import BASE_FUNCTION, PACKAGE, TARGET, function_name, numerics_kind

_FIX = "report this model; try --backend onnx"


@contextlib.contextmanager
def _quiet_coremltools():
    """coremltools draws a tqdm bar per pass pipeline and compression pass (on stderr, even under
    ``--quiet``); swap those bars for plain iteration while converting, and mute its NumPy warnings."""
    import importlib
    import logging

    bars = [(importlib.import_module(m), attr) for m, attr in (
        ("coremltools.converters.mil.mil.passes.pass_pipeline", "tqdm"),
        ("coremltools.converters.mil.frontend.torch.ops", "_tqdm"),
        ("coremltools.optimize.coreml._post_training_quantization", "tqdm"),
        ("coremltools.optimize.coreml._quantization_passes", "tqdm"))]
    bars = [(m, attr, getattr(m, attr)) for m, attr in bars if hasattr(m, attr)]
    level = logging.getLogger("coremltools").level
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        for m, attr, _ in bars:
            setattr(m, attr, lambda iterable, *args, **kwargs: iterable)
        # Quantizing an all-zero row (an embedding's padding row) divides 0 by a 0 scale; the row
        # dequantizes to zeros all the same, so the RuntimeWarnings say nothing to a user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        for m, attr, bar in bars:
            setattr(m, attr, bar)
        logging.getLogger("coremltools").setLevel(level)


def prepare(job: ExportJob) -> None:
    check_target(job.spec.coreml.deployment_target)
    job.meta.update(precision=job.spec.precision.value, deployment_target=job.spec.coreml.deployment_target,
                    numerics=numerics_kind(), capacity=job.spec.max_seq_len, convert_seconds={},
                    io=io_names(job.spec))


def io_names(spec: ExportSpec) -> dict:
    """The feature names of every exported function, for apps that drive the model themselves
    (``manifest["artifacts"][i]["meta"]["io"]``; the iOS demo reads them instead of hard-coding):
    ``input_ids`` and ``position_ids`` int32 ``[1, T]``, ``causal_mask`` float32 ``[1, 1, T, E]``
    (0 where a query may attend, -inf elsewhere; ``E`` = cached + new tokens), ``logits`` float32
    ``[1, T, vocab]``, and the KV-cache states (fp32 exports split each into hi/lo fp16 parts)."""
    from ...tasks.coreml_decoder import SPLIT_STATE_NAMES, STATE_NAMES

    states = SPLIT_STATE_NAMES if spec.precision is Precision.FP32 else STATE_NAMES
    return {"input_ids": "input_ids", "position_ids": "position_ids", "causal_mask": "causal_mask",
            "logits": "logits", "states": list(states), "mask": "additive"}


def _convert(job: ExportJob, name: str, adapter, path: Path, embeds: bool = False) -> None:
    t1 = time.perf_counter()
    model, ops = convert_decoder(job, adapter, embeds)
    model.save(str(path))
    job.meta["convert_seconds"][name] = round(time.perf_counter() - t1, 2)
    job.meta.setdefault("ops", ops)


def export_external(job: ExportJob) -> None:
    """One multifunction package: a function per adapter plus ``base``, base weights stored once."""
    task = job.task
    with tempfile.TemporaryDirectory(prefix="memlora-coreml-") as tmp:
        singles: dict[str, Path] = {}
        names = {BASE_FUNCTION: None, **task.adapters}
        for name, adapter in names.items():
            singles[name] = Path(tmp) / f"{name}.mlpackage"
            _convert(job, name, adapter, singles[name])
        functions = {name: function_name(name) for name in names}
        package = job.add("model", PACKAGE)
        _save_multifunction(singles, functions, package, default=functions[next(iter(task.adapters), BASE_FUNCTION)])
        job.meta["functions"] = functions
        # What sharing the base buys: the multifunction package against one package per function.
        job.meta["single_package_bytes"] = {n: package_bytes(p) for n, p in singles.items()}
        job.meta["package_bytes"] = package_bytes(package)
        job.meta["single_weight_bytes"] = {n: weight_bytes(p) for n, p in singles.items()}
        job.meta["weight_bytes"] = weight_bytes(package)


def export_fused(job: ExportJob, name: str) -> None:
    """One package with the adapter fused into the weights (fused by the caller)."""
    _convert(job, name, None, job.add(f"model:{name}", f"{name}.mlpackage"))


def check_target(target: str) -> None:
    """Refuse deployment targets without Core ML state (iOS 17 and older)."""
    import coremltools as ct

    known = {t.name: t for t in ct.target}
    if target not in known:
        raise MemloraError(f"unknown Core ML deployment target {target!r}", fix=f"use {TARGET} or newer")
    if known[target].value < ct.target.iOS18.value:
        raise MemloraError(
            f"deployment target {target} has no Core ML state, and memlora keeps the KV cache in state",
            fix="target iOS18 / macOS15 or newer (a stateless cache would copy it in and out every token)")


def convert_decoder(job: ExportJob, adapter=None, embeds: bool = False):
    """Convert the decoder (with ``adapter`` unfused, or none) to a compressed ``MLModel``
    (not loaded). ``embeds``: the step takes ``inputs_embeds [1, T, D]`` instead of ids (an
    SVLM's ``vqa`` function). Returns the model and an op-type histogram of its main function."""
    import coremltools as ct
    import torch

    from ...tasks.coreml_decoder import CoreMLDecoder, CoreMLEmbedsDecoder, make_causal_mask
    from ...tasks.delegable import tanh_gelu_written_out

    task, spec, target = job.task, job.spec, job.spec.coreml.deployment_target
    n = spec.max_seq_len
    # One slot more than usable: a dynamic bound equal to the buffer length trips a guard.
    wrapper = (CoreMLEmbedsDecoder if embeds else CoreMLDecoder)(
        task, n + 1, adapter, split_cache=spec.precision is Precision.FP32).eval()
    first, hidden = ("inputs_embeds", task.config.hidden_size) if embeds else ("input_ids", None)
    try:
        T, E = torch.export.Dim("tokens", min=1, max=n), torch.export.Dim("cache_end", min=1, max=n)
        x = torch.randn(1, 3, hidden) if embeds else torch.tensor([[1, 2, 3]])
        example = (x, torch.tensor([[2, 3, 4]]), torch.from_numpy(make_causal_mask(2, 3)))
        with torch.no_grad(), tanh_gelu_written_out(wrapper) as n_gelu:
            job.meta["gelu_tanh_explicit"] = n_gelu
            try:
                program = torch.export.export(
                    wrapper, example, dynamic_shapes={first: {1: T}, "position_ids": {1: T},
                                                      "causal_mask": {2: T, 3: E}})
            except Exception as e:  # torch.export raises many types; name the family and the first line
                raise job.fail("torch.export", e, _FIX) from None
        program = _drop_aliases(program.run_decompositions({}))
        states = [ct.StateType(ct.TensorType(shape=tuple(getattr(wrapper, s).shape), dtype=np.float16), name=s)
                  for s in wrapper.state_names]
    finally:
        wrapper.release()
    head = (ct.TensorType(first, shape=(1, ct.RangeDim(1, n), hidden), dtype=np.float32) if embeds
            else ct.TensorType(first, shape=(1, ct.RangeDim(1, n)), dtype=np.int32))
    inputs = [head, ct.TensorType("position_ids", shape=(1, ct.RangeDim(1, n)), dtype=np.int32),
              ct.TensorType("causal_mask", shape=(1, 1, ct.RangeDim(1, n), ct.RangeDim(1, n)), dtype=np.float32)]
    model = _ct_convert(job, program, inputs, "logits", states)
    with _quiet_coremltools():
        model = compress(model, spec)
    return model, op_histogram(model)


def _ct_convert(job: ExportJob, program, inputs, output: str, states=None):
    """``ct.convert`` of an exported program at the spec's precision and target (not loaded)."""
    import coremltools as ct

    spec = job.spec
    precision = (ct.transform.FP16ComputePrecision(op_selector=_fp16_op) if spec.precision is Precision.FP16
                 else ct.precision.FLOAT32)
    try:
        with _quiet_coremltools():
            return ct.convert(program, inputs=inputs, outputs=[ct.TensorType(output, dtype=np.float32)],
                              states=states, minimum_deployment_target=getattr(ct.target, spec.coreml.deployment_target),
                              compute_precision=precision, convert_to="mlprogram", skip_model_load=True)
    except Exception as e:  # coremltools raises ValueError/NotImplementedError/RuntimeError
        raise job.fail("ct.convert", e, _FIX) from None


def op_histogram(model) -> dict[str, int]:
    """Op type -> count in a model's main function."""
    return dict(Counter(op.op_type for op in model._mil_program.functions["main"].operations).most_common())


_NORM_STATS = {"pow", "reduce_mean", "rsqrt", "sqrt", "reduce_sum_square"}


def _fp16_op(op) -> bool:
    """fp16 everywhere except the norms' statistics: ``mean(x**2)`` overflows fp16 once a residual
    stream passes 256, which real LMs' outlier channels do. ``x**2``, the mean, ``+ eps`` and the
    rsqrt stay fp32 (four small ops a layer); the normalised product is fp16 again."""
    if op.op_type in _NORM_STATS:
        return False
    if op.op_type == "add":  # the "+ eps" between the mean and the rsqrt
        return not any(getattr(v, "op", None) is not None and v.op.op_type == "reduce_mean"
                       for v in op.inputs.values() if not isinstance(v, (list, tuple)))
    return True


def _drop_aliases(program):
    """``aten.alias`` (left by transformers' ``logits_to_keep`` slice) has no Core ML lowering; it is
    a no-op view, so its uses take its input."""
    import torch

    graph = program.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def compress(model, spec: ExportSpec):
    """int8 per-channel or int4 block-wise weights of the base model's parameters only.

    torch.export names parameter inputs ``p_<path>`` and lifted tensors ``c_<path>_lifted_tensor_N``;
    the LoRA A/B are the latter, so they stay float (as in the ONNX backend) and an adapter loses
    nothing to the base's quantization.
    """
    if spec.quant is Quant.NONE:
        return model
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    if spec.quant is Quant.INT8:
        cfg = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                      weight_threshold=1024)
    else:
        cfg = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                      block_size=spec.group_size, weight_threshold=1024)
    skip = {op.name: None for op in model._mil_program.functions["main"].operations
            if op.op_type == "const" and not op.name.startswith("p_")}
    return linear_quantize_weights(model, OptimizationConfig(global_config=cfg, op_name_configs=skip))


def _save_multifunction(singles: dict[str, Path], functions: dict[str, str], out: Path, default: str) -> None:
    import coremltools as ct

    desc = ct.utils.MultiFunctionDescriptor()
    for name, path in singles.items():
        desc.add_function(str(path), src_function_name="main", target_function_name=functions[name])
    desc.default_function_name = default
    with _quiet_coremltools():
        ct.utils.save_multifunction(desc, str(out))


def weight_bytes(path: Path) -> int:
    """Bytes of a package's weight blob(s) (the graph description is counted apart)."""
    return sum(p.stat().st_size for p in (Path(path) / "Data" / "com.apple.CoreML" / "weights").rglob("*")
               if p.is_file())


def package_bytes(path: Path) -> int:
    """Bytes of every file in a package folder."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
