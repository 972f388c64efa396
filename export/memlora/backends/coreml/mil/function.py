"""One MIL function prepared for evaluation, and loading a saved package back."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ....core.errors import MemloraError
from .constexpr import CONSTEXPR
from .dtypes import DTYPES as _DTYPES
from .dtypes import FIX_UNKNOWN as _FIX_UNKNOWN
from .ops import OPS


def load_program(package: Path):
    """Load a saved ``.mlpackage`` (single or multifunction) back into a pymil Program."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto import load as milproto

    package = Path(package)
    if not (package / "Manifest.json").is_file():
        raise MemloraError("not an .mlpackage (no Manifest.json)", package, "re-run memlora export")
    spec = ct.utils.load_spec(str(package))
    weights = package / "Data" / "com.apple.CoreML" / "weights"
    return milproto.load(spec, spec.specificationVersion, str(weights))


def _np_dtype(var) -> type:
    from coremltools.converters.mil.mil import types

    dt = var.dtype
    name = types.builtin_to_string(dt)
    try:
        return _DTYPES[name]
    except KeyError:
        raise MemloraError(f"MIL dtype {name} of {var.name} is not known to the NumPy evaluator",
                           fix=_FIX_UNKNOWN) from None


def _val(v):
    """A const's value as a NumPy array (strings stay strings)."""
    if isinstance(v, str):
        return v
    return np.asarray(v)


class MilFunction:
    """One function of a pymil Program, prepared for repeated evaluation.

    Constants and constexpr (compressed) weights are materialised once; every op type is checked
    against :data:`OPS` here, so an unknown op fails before anything runs.
    """

    def __init__(self, program, function: str = "main"):
        from coremltools.converters.mil.mil import types

        if function not in program.functions:
            raise MemloraError(f"no function {function!r} in the program (has {sorted(program.functions)})",
                               fix="re-run memlora export")
        fn = program.functions[function]
        self.name = function
        self.consts: dict[str, np.ndarray] = {}
        self.inputs: dict[str, type] = {}
        self.states: dict[str, tuple[tuple[int, ...], type]] = {}
        for name, var in fn.inputs.items():
            if types.is_state(var.sym_type):
                wrapped = var.sym_type.wrapped_type()
                self.states[name] = (tuple(int(d) for d in wrapped.get_shape()),
                                     _DTYPES[types.builtin_to_string(wrapped.get_primitive())])
            else:
                self.inputs[name] = _np_dtype(var)
        self.outputs = [v.name for v in fn.outputs]
        self._steps: list[tuple] = []
        unknown: dict[str, str] = {}
        for op in fn.operations:
            if op.blocks:
                unknown.setdefault(op.op_type, op.name)
                continue
            if op.op_type == "const":
                self.consts[op.outputs[0].name] = _val(op.outputs[0].val)
            elif op.op_type in CONSTEXPR:
                args = {k: self._const_input(v, op) for k, v in op.inputs.items()}
                value = CONSTEXPR[op.op_type](args).astype(_np_dtype(op.outputs[0]))
                self.consts[op.outputs[0].name] = value
            elif op.op_type in ("read_state", "coreml_update_state") or op.op_type in OPS:
                ins = {k: (tuple(x.name for x in v) if isinstance(v, (list, tuple)) else v.name)
                       for k, v in op.inputs.items()}
                outs = [(o.name, _np_dtype(o) if not types.is_state(o.sym_type) else None) for o in op.outputs]
                self._steps.append((op.op_type, op, ins, outs))
            else:
                unknown.setdefault(op.op_type, op.name)
        if unknown:
            listed = ", ".join(f"{t} (first: {n})" for t, n in unknown.items())
            raise MemloraError(f"MIL op(s) not known to memlora's NumPy evaluator: {listed}", fix=_FIX_UNKNOWN)

    def _const_input(self, v, op):
        if isinstance(v, (list, tuple)):
            return [self._const_input(x, op) for x in v]
        if v.name in self.consts:
            return self.consts[v.name]
        if v.val is not None:
            return _val(v.val)
        raise MemloraError(f"constexpr op {op.name} has a non-constant input {v.name}", fix="re-run memlora export")

    def new_state(self) -> dict[str, np.ndarray]:
        """Zeroed state buffers, as ``MLModel.make_state()`` gives on a Mac."""
        return {name: np.zeros(shape, dtype) for name, (shape, dtype) in self.states.items()}

    def run(self, feeds: dict[str, np.ndarray], state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Evaluate the function; ``state`` is updated in place. Returns the outputs by name."""
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise MemloraError(f"missing inputs {missing} for function {self.name}", fix="feed every model input")
        env: dict[str, object] = dict(self.consts)
        for name, dtype in self.inputs.items():
            env[name] = np.asarray(feeds[name]).astype(dtype, copy=False)
        state = state if state is not None else self.new_state()
        for op_type, op, ins, outs in self._steps:
            if op_type == "read_state":
                env[outs[0][0]] = state[ins["input"]].copy()
                continue
            if op_type == "coreml_update_state":
                name = ins["state"]
                state[name] = np.asarray(env[ins["value"]]).astype(state[name].dtype)
                env[outs[0][0]] = env[ins["value"]]
                continue
            args = {k: ([env[x] for x in v] if isinstance(v, tuple) else env[v]) for k, v in ins.items()}
            result = OPS[op_type](args, op)
            if len(outs) == 1:
                result = (result,)
            for (name, dtype), value in zip(outs, result):
                env[name] = np.asarray(value).astype(dtype, copy=False)
        return {name: env[name] for name in self.outputs}
