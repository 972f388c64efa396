"""Core ML run side: Apple's runtime on macOS, the NumPy MIL evaluator elsewhere (no torch)."""
from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.errors import MemloraError
from ..runner_base import ArtifactRunner
from ...tasks.names import make_causal_mask
from . import BASE_FUNCTION, numerics_kind


class _MilEngine:
    """The saved MIL program in NumPy (any OS)."""

    kind = "mil-numpy"

    def __init__(self):
        self._programs: dict[Path, object] = {}
        self._functions: dict[tuple[Path, str], object] = {}

    def open(self, package: Path, function: str | None):
        from .mil import MilFunction, load_program

        function = function or "main"
        key = (package, function)
        if key not in self._functions:
            if package not in self._programs:
                self._programs[package] = load_program(package)
            self._functions[key] = MilFunction(self._programs[package], function)
        fn = self._functions[key]
        return fn, fn.new_state()

    @staticmethod
    def predict(fn, feeds: dict, state, output: str = "logits") -> np.ndarray:
        return fn.run(feeds, state)[output]

    @staticmethod
    def save_state(fn, state):
        # the evaluator replaces a state buffer on every write (never writes into one), so a
        # shallow copy of the dict is a snapshot later runs cannot change.
        return dict(state)

    @staticmethod
    def load_state(fn, saved):
        return dict(saved)


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
        # a stateless function (an SVLM's vision tower or token embedding) gets no state
        return model, (model.make_state() if self._state_names(model) else None)

    @staticmethod
    def predict(model, feeds: dict, state, output: str = "logits") -> np.ndarray:
        out = model.predict(feeds, state=state) if state is not None else model.predict(feeds)
        return np.asarray(out[output], np.float32)

    @staticmethod
    def _state_names(model) -> list[str]:
        return [s.name for s in model.get_spec().description.state]

    def save_state(self, model, state):
        """A copy of every state buffer (``MLState.read_state``, coremltools 8.1+ on macOS 15)."""
        return {n: np.array(state.read_state(n)) for n in self._state_names(model)}

    def load_state(self, model, saved):
        fresh = model.make_state()
        for name, value in saved.items():
            fresh.write_state(name, value)
        return fresh


class CoreMLRunner(ArtifactRunner):
    """External: one multifunction package, a function per adapter (plus ``base``); fused: a
    package per adapter. Switching adapters drops the cache (a fresh state)."""

    def __init__(self, artifact: Artifact, root: Path, engine: str | None = None, max_seq_len: int | None = None):
        super().__init__(artifact, root, max_seq_len)
        engine = engine or numerics_kind()
        if engine == "coreml-predict":
            if platform.system() != "Darwin":
                raise MemloraError("Core ML prediction needs macOS", fix="use the mil-numpy engine on this OS")
            self._engine = _PredictEngine(artifact.precision.value)
        elif engine == "mil-numpy":
            self._engine = _MilEngine()
        else:
            raise MemloraError(f"unknown Core ML engine {engine!r}", fix="use coreml-predict or mil-numpy")
        self.numerics = self._engine.kind
        for role in artifact.files:
            if not (self.file(role) / "Manifest.json").is_file():
                raise MemloraError("exported Core ML package missing", self.file(role), "re-run memlora export")
        self.start()

    def _activate(self, name: str | None) -> None:
        if self.external:
            function = self.artifact.meta["functions"][name if name is not None else BASE_FUNCTION]
            self._target = (self.file("model"), function)
        else:
            self._target = (self.file(f"model:{name}"), None)  # a single-function package

    def _reset(self) -> None:
        self._model, self._state = self._engine.open(*self._target)

    def _forward(self, ids: list[int]) -> np.ndarray:
        n = len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int32),
                 "position_ids": np.arange(self.pos, self.pos + n, dtype=np.int32)[None],
                 "causal_mask": make_causal_mask(self.pos, n)}
        return np.asarray(self._engine.predict(self._model, feeds, self._state), np.float32)[0]

    def _save(self):
        return self._engine.save_state(self._model, self._state)

    def _load(self, state) -> None:
        self._state = self._engine.load_state(self._model, state)

    def _close(self) -> None:
        self._model = self._state = None
