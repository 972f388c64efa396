"""Core ML backend: ``mlprogram`` for iOS 18 / macOS 15, the KV cache as Core ML state.

Conversion: ``torch.export`` of :class:`~memlora.tasks.coreml_decoder.CoreMLDecoder` with a
flexible token count and cache end, then ``ct.convert`` with two (fp16) or four (fp32, split
hi/lo cache) ``StateType``s. One function serves prefill and decode: ``input_ids`` and
``position_ids [1, T]``, ``causal_mask [1, 1, T, E]``; the write offset is ``E - T``.

external mode: one multifunction ``memlora.mlpackage`` with a function per adapter plus
``base``; LoRA stays unfused (constant low-rank matmuls), so the base weights are identical in
every function and ``save_multifunction`` stores them once.
fused mode: one ``<adapter>.mlpackage`` per adapter, LoRA merged into the weights.
Compression: ``int8`` linear symmetric per output channel, ``int4`` block-wise (block
``group_size``, iOS 18 ``constexpr_blockwise_shift_scale``); LoRA weights stay float.

Prediction needs macOS (``MLModel.predict`` with ``make_state()``); elsewhere the runner
evaluates the saved MIL program with memlora's NumPy evaluator (:mod:`memlora.mil_eval`), which
checks the conversion (graph, weights, compression, state updates), not Apple's kernels.
"""
from __future__ import annotations

import contextlib
import platform
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import AdapterMode, ExportSpec, Precision, Quant
from ..errors import ExportFailure, MemloraError
from ..tasks.decoder import DecoderTask
from .base import Artifact

NAME = "coreml"
TARGET = "iOS18"  # Core ML state (the KV cache) and block-wise int4 need iOS 18 / macOS 15
BASE_FUNCTION = "base"
PACKAGE = "memlora.mlpackage"
_INPUTS = ("input_ids", "position_ids", "causal_mask")


def available() -> str | None:
    """None if coremltools imports. Conversion runs anywhere; prediction needs macOS, and the
    runner falls back to the NumPy MIL evaluator elsewhere, so Linux is available too."""
    try:
        import coremltools  # noqa: F401
    except ImportError as e:
        return f"missing package {e.name} (pip install memlora[coreml])"
    return None


def numerics_kind() -> str:
    """How this host checks a Core ML export: Apple's runtime, or the MIL program in NumPy."""
    return "coreml-predict" if platform.system() == "Darwin" else "mil-numpy"


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


def export(task: DecoderTask, spec: ExportSpec, out_dir: Path, target: str = TARGET) -> Artifact:
    """Export ``task`` under ``out_dir/coreml/<mode>-<quant>-<precision>/`` and describe the files."""
    check_target(target)
    sub = Path("coreml") / f"{spec.adapter_mode.value}-{spec.quant.value}-{spec.precision.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    meta: dict = {"precision": spec.precision.value, "deployment_target": target, "numerics": numerics_kind(),
                  "capacity": spec.max_seq_len, "convert_seconds": {}, "io": io_names(spec)}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="memlora-coreml-") as tmp:
        tmp = Path(tmp)
        if spec.adapter_mode is AdapterMode.EXTERNAL:
            singles: dict[str, Path] = {}
            names = {BASE_FUNCTION: None, **{n: a for n, a in task.adapters.items()}}
            for name, adapter in names.items():
                t1 = time.perf_counter()
                model, ops = convert_decoder(task, spec, adapter=adapter, target=target)
                singles[name] = tmp / f"{name}.mlpackage"
                model.save(str(singles[name]))
                meta["convert_seconds"][name] = round(time.perf_counter() - t1, 2)
                meta.setdefault("ops", ops)
            functions = {name: function_name(name) for name in names}
            files["model"] = str(sub / PACKAGE)
            _save_multifunction(singles, functions, out_dir / files["model"],
                                default=functions[next(iter(task.adapters), BASE_FUNCTION)])
            meta["functions"] = functions
            # What sharing the base buys: the multifunction package against one package per function.
            meta["single_package_bytes"] = {n: package_bytes(p) for n, p in singles.items()}
            meta["package_bytes"] = package_bytes(out_dir / files["model"])
            meta["single_weight_bytes"] = {n: weight_bytes(p) for n, p in singles.items()}
            meta["weight_bytes"] = weight_bytes(out_dir / files["model"])
        else:
            from ..tasks.lora import fused

            for name, adapter in task.adapters.items():
                t1 = time.perf_counter()
                with fused(task.model, adapter):
                    model, ops = convert_decoder(task, spec, adapter=None, target=target)
                files[f"model:{name}"] = str(sub / f"{name}.mlpackage")
                model.save(str(out_dir / files[f"model:{name}"]))
                meta["convert_seconds"][name] = round(time.perf_counter() - t1, 2)
                meta.setdefault("ops", ops)
            meta["package_bytes"] = {n: package_bytes(out_dir / p) for n, p in files.items()}
    meta["export_seconds"] = round(time.perf_counter() - t0, 2)
    return Artifact(NAME, spec.adapter_mode.value, spec.quant.value, list(task.adapters), files,
                    spec.max_seq_len, meta)


def io_names(spec: ExportSpec) -> dict:
    """The feature names of every exported function, for apps that drive the model themselves
    (``manifest["artifacts"][i]["meta"]["io"]``; the iOS demo reads them instead of hard-coding):
    ``input_ids`` and ``position_ids`` int32 ``[1, T]``, ``causal_mask`` float32 ``[1, 1, T, E]``
    (0 where a query may attend, -inf elsewhere; ``E`` = cached + new tokens), ``logits`` float32
    ``[1, T, vocab]``, and the KV-cache states (fp32 exports split each into hi/lo fp16 parts)."""
    from ..tasks.coreml_decoder import SPLIT_STATE_NAMES, STATE_NAMES

    states = SPLIT_STATE_NAMES if spec.precision is Precision.FP32 else STATE_NAMES
    return {"input_ids": _INPUTS[0], "position_ids": _INPUTS[1], "causal_mask": _INPUTS[2], "logits": "logits",
            "states": list(states), "mask": "additive"}


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


def function_name(adapter: str) -> str:
    """A MIL function name for an adapter (adapter names may hold ``-``; function names may not)."""
    return adapter.replace("-", "_")


def convert_decoder(task: DecoderTask, spec: ExportSpec, adapter=None, target: str = TARGET):
    """Convert the decoder (with ``adapter`` unfused, or none) to a compressed ``MLModel``
    (not loaded). Returns the model and an op-type histogram of its main function."""
    import coremltools as ct
    import torch

    from ..tasks.coreml_decoder import CoreMLDecoder, make_causal_mask

    check_target(target)
    n = spec.max_seq_len
    # One slot more than usable: a dynamic bound equal to the buffer length trips a guard.
    wrapper = CoreMLDecoder(task, n + 1, adapter, split_cache=spec.precision is Precision.FP32).eval()
    try:
        T, E = torch.export.Dim("tokens", min=1, max=n), torch.export.Dim("cache_end", min=1, max=n)
        example = (torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]), torch.from_numpy(make_causal_mask(2, 3)))
        with torch.no_grad():
            try:
                program = torch.export.export(
                    wrapper, example, dynamic_shapes={"input_ids": {1: T}, "position_ids": {1: T},
                                                      "causal_mask": {2: T, 3: E}})
            except Exception as e:  # torch.export raises many types; name the family and the first line
                raise _failure(task, "torch.export", e) from None
        program = _drop_aliases(program.run_decompositions({}))
        states = [ct.StateType(ct.TensorType(shape=tuple(getattr(wrapper, s).shape), dtype=np.float16), name=s)
                  for s in wrapper.state_names]
    finally:
        wrapper.release()
    inputs = [ct.TensorType("input_ids", shape=(1, ct.RangeDim(1, n)), dtype=np.int32),
              ct.TensorType("position_ids", shape=(1, ct.RangeDim(1, n)), dtype=np.int32),
              ct.TensorType("causal_mask", shape=(1, 1, ct.RangeDim(1, n), ct.RangeDim(1, n)), dtype=np.float32)]
    precision = (ct.transform.FP16ComputePrecision(op_selector=_fp16_op) if spec.precision is Precision.FP16
                 else ct.precision.FLOAT32)
    try:
        with _quiet_coremltools():
            model = ct.convert(program, inputs=inputs, outputs=[ct.TensorType("logits", dtype=np.float32)],
                               states=states, minimum_deployment_target=getattr(ct.target, target),
                               compute_precision=precision, convert_to="mlprogram", skip_model_load=True)
    except Exception as e:  # coremltools raises ValueError/NotImplementedError/RuntimeError
        raise _failure(task, "ct.convert", e) from None
    with _quiet_coremltools():
        model = compress(model, spec)
    ops = dict(Counter(op.op_type for op in model._mil_program.functions["main"].operations).most_common())
    return model, ops


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


def _failure(task: DecoderTask, stage: str, e: Exception) -> ExportFailure:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return ExportFailure(f"Core ML {stage} of family {task.info.family.model_type} failed: {first}",
                         task.info.path, "report this model; try --backend onnx")


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


# --- running -------------------------------------------------------------------------------------

def load(artifact: Artifact, root: Path) -> "CoreMLRunner":
    """Open an exported Core ML artifact as a Runner (Core ML on macOS, the MIL evaluator elsewhere)."""
    return CoreMLRunner(artifact, Path(root))


class _MilEngine:
    """The saved MIL program in NumPy (any OS)."""

    kind = "mil-numpy"

    def __init__(self):
        self._programs: dict[Path, object] = {}
        self._functions: dict[tuple[Path, str], object] = {}

    def open(self, package: Path, function: str | None):
        from ..mil_eval import MilFunction, load_program

        function = function or "main"
        key = (package, function)
        if key not in self._functions:
            if package not in self._programs:
                self._programs[package] = load_program(package)
            self._functions[key] = MilFunction(self._programs[package], function)
        fn = self._functions[key]
        return fn, fn.new_state()

    @staticmethod
    def predict(fn, feeds: dict, state) -> np.ndarray:
        return fn.run(feeds, state)["logits"]


class _PredictEngine:
    """Apple's runtime: ``MLModel.predict`` with a state from ``make_state()`` (macOS 15+)."""

    kind = "coreml-predict"

    def __init__(self, precision: str):
        import coremltools as ct

        self._ct = ct
        # fp32 exports exist to check numerics: the CPU computes them in fp32; fp16 runs anywhere.
        self._units = ct.ComputeUnit.CPU_ONLY if precision == "fp32" else ct.ComputeUnit.ALL
        self._models: dict[tuple[Path, str], object] = {}

    def open(self, package: Path, function: str | None):
        key = (package, function)
        if key not in self._models:  # function None: a single-function package's only function
            self._models[key] = self._ct.models.MLModel(str(package), compute_units=self._units,
                                                        function_name=function)
        model = self._models[key]
        return model, model.make_state()

    @staticmethod
    def predict(model, feeds: dict, state) -> np.ndarray:
        return np.asarray(model.predict(feeds, state=state)["logits"], np.float32)


class CoreMLRunner:
    """Runner over a Core ML export. External: one multifunction package, a function per adapter;
    fused: a package per adapter. Switching adapters drops the cache (a fresh state)."""

    def __init__(self, artifact: Artifact, root: Path, engine: str | None = None):
        self.artifact, self.root = artifact, root
        self.adapters = list(artifact.adapters)
        self.max_seq_len = artifact.max_seq_len
        self._external = artifact.adapter_mode == AdapterMode.EXTERNAL.value
        engine = engine or numerics_kind()
        if engine == "coreml-predict":
            if platform.system() != "Darwin":
                raise MemloraError("Core ML prediction needs macOS", fix="use the mil-numpy engine on this OS")
            self._engine = _PredictEngine(artifact.meta.get("precision", "fp16"))
        elif engine == "mil-numpy":
            self._engine = _MilEngine()
        else:
            raise MemloraError(f"unknown Core ML engine {engine!r}", fix="use coreml-predict or mil-numpy")
        self.numerics = self._engine.kind
        for rel in artifact.files.values():
            if not (root / rel / "Manifest.json").is_file():
                raise MemloraError("exported Core ML package missing", root / rel, "re-run memlora export")
        self.set_adapter(self.adapters[0] if self.adapters else None)

    def set_adapter(self, name: str | None) -> None:
        if name is not None and name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if self._external:
            package = self.root / self.artifact.files["model"]
            function = self.artifact.meta["functions"][name if name is not None else BASE_FUNCTION]
        else:
            if name is None:
                raise MemloraError("a fused export has no bare base model", fix="pick an adapter")
            package, function = self.root / self.artifact.files[f"model:{name}"], None  # single function
        self._target = (package, function)
        self.active = name
        self.reset()

    def reset(self) -> None:
        self._model, self._state = self._engine.open(*self._target)
        self._pos = 0

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        from ..tasks.coreml_decoder import make_causal_mask

        n = len(ids)
        if n == 0:
            raise MemloraError("empty prompt", fix="pass at least one token")
        if self._pos + n > self.max_seq_len:
            raise MemloraError(f"context full: {self._pos} cached + {n} new tokens > max_seq_len {self.max_seq_len}",
                               fix="reset the runner, or export with a larger --max-seq-len")
        feeds = {"input_ids": np.asarray([ids], np.int32),
                 "position_ids": np.arange(self._pos, self._pos + n, dtype=np.int32)[None],
                 "causal_mask": make_causal_mask(self._pos, n)}
        logits = self._engine.predict(self._model, feeds, self._state)
        self._pos += n
        return np.asarray(logits, np.float32)[0]

    def decode(self, token: int) -> np.ndarray:
        return self.prefill([token])[0]

    def close(self) -> None:
        self._model = self._state = None
