"""ONNX run side: onnxruntime CPU sessions, no torch (it costs ~300 MB per runtime process)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.errors import MemloraError
from ..runner_base import ArtifactRunner


def _session_options(threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the LoRA inputs-with-initializers warning is expected
    if threads:
        opts.intra_op_num_threads = threads
    return opts


class OnnxRunner(ArtifactRunner):
    """Fused: one session per adapter, opened on switch (one in memory at a time). External: one
    session, adapters activated per run."""

    def __init__(self, artifact: Artifact, root: Path, threads: int | None = None,
                 max_seq_len: int | None = None):
        import onnxruntime as ort

        # A graph with fused attention reads rotary tables of ``rotary_positions`` rows: past them
        # the runner refuses ("KV cache full") instead of onnxruntime failing mid-run.
        limits = [n for n in (max_seq_len, artifact.meta.get("rotary_positions")) if n]
        super().__init__(artifact, root, min(limits) if limits else None)
        self._ort = ort
        self._opts = _session_options(threads)
        self.threads = threads
        self._session = None
        self._session_key: str | None = None
        self._lora: dict[str, object] = {}
        self._run_options = None
        if self.external:
            self._session = self._open("model")
            for name in self.adapters:
                la = ort.LoraAdapter()
                la.Load(str(self.file(f"adapter:{name}")))
                self._lora[name] = la
        self.start()

    def _open(self, role: str):
        return self._ort.InferenceSession(str(self.file(role)), self._opts, providers=["CPUExecutionProvider"])

    def _activate(self, name: str | None) -> None:
        if self.external:
            self._run_options = self._ort.RunOptions()
            if name is not None:
                self._run_options.add_active_adapter(self._lora[name])
        elif self._session_key != name:
            self._session = None  # free the previous model before opening the next
            self._session = self._open(f"model:{name}")
            self._session_key = name

    def _reset(self) -> None:
        past = [i for i in self._session.get_inputs() if i.name.startswith("past.")]
        self._past = {i.name: self._value(np.zeros([1, i.shape[1], 0, i.shape[3]], np.float32)) for i in past}
        # present.L.key feeds past.L.key next step; worked out once per session, not per token.
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._past_names = ["past." + o.split(".", 1)[1] for o in self._output_names[1:]]

    def _value(self, array: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(array)

    def _forward(self, ids: list[int]) -> np.ndarray:
        # The cache stays in onnxruntime's own tensors from step to step (OrtValues in and out),
        # as an app feeding a run's outputs back does: no NumPy copy of every cache tensor per token.
        feeds = {"input_ids": self._value(np.asarray([ids], np.int64)),
                 "position_ids": self._value(np.arange(self.pos, self.pos + len(ids), dtype=np.int64)[None]), **self._past}
        outs = self._session.run_with_ort_values(self._output_names, feeds, self._run_options)
        self._past.update(zip(self._past_names, outs[1:]))
        return outs[0].numpy()[0]

    def _rewind(self, n: int) -> None:
        self._past = {k: self._value(np.ascontiguousarray(v.numpy()[:, :, :n])) for k, v in self._past.items()}

    def _save(self):
        # onnxruntime returns new present tensors each run and nothing writes into them, so the
        # past tensors themselves are the snapshot (ONNX Runtime GenAI: Generator.rewind_to).
        return dict(self._past)

    def _load(self, state) -> None:
        self._past = dict(state)

    def _close(self) -> None:
        self._session = None
        self._lora.clear()


def load_encoder(model_path: Path, threads: int | None = None):
    """Open an exported embedder graph: returns ``encode(input_ids, attention_mask) -> [batch, dim]``."""
    import onnxruntime as ort

    model_path = Path(model_path)
    if not model_path.is_file():
        raise MemloraError("exported embedder file missing", model_path, "re-run memlora export --embedder")
    session = ort.InferenceSession(str(model_path), _session_options(threads), providers=["CPUExecutionProvider"])

    def encode(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
        return session.run(["embeddings"], feeds)[0]

    return encode
