"""ExecuTorch run side: the pybindings runtime (XNNPACK + portable + LLM custom ops)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.config import Residency
from ...core.console import native_stderr_captured
from ...core.errors import MemloraError
from ..runner_base import ArtifactRunner
from . import FOUNDATION

# XNNPACK's cpuinfo prints five lines to fd 2 on the process's first forward (into a streamed chat
# answer); that call, and program loads, run with native stderr held (shown with --verbose).
_first_forward_done = [False]


def _import_runtime():
    """The pybindings runtime with the LLM custom ops registered (needed before loading)."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (registers llama::*)
    import executorch.kernels.quantized  # noqa: F401  (embedding_byte: the int8 token table of int4/int8 exports)
    from executorch.extension.pybindings import portable_lib

    return portable_lib


def _limit_openmp() -> None:
    """One OpenMP thread for the LLM custom ops (custom_sdpa, update_cache: ATen's parallel_for in
    libcustom_ops_aot_lib, i.e. libgomp), set before the first forward. The matmuls run on XNNPACK's
    own pool (``threads``); a second pool on the same cores only spins at its barriers (issue 17:
    35% of samples in libgomp at 2 threads, 32.5 -> 36.8 tok/s with one OpenMP thread)."""
    import torch

    torch.set_num_threads(1)
    mkl_single_threaded()


def mkl_single_threaded() -> bool:
    """MKL's process-wide thread count set to one; False where torch carries no MKL (ARM, macOS).

    ``torch.set_num_threads`` sets MKL's count for the calling thread only. The wheel's
    custom_sdpa runs on XNNPACK's pool threads and calls MKL's sgemv (inside libtorch_cpu) there,
    which past 128 cached positions forks a libgomp team per call beside the spinning pool: at 2
    threads decode fell from 66 to 25 tok/s (int4 fused) and 13.3 to 5.5 (fp32) on this Xeon,
    wherever the process had not set OMP_NUM_THREADS=1 before start (chat, the memory loop).
    ``mkl_serv_set_num_threads`` is the global setter behind ``mkl_set_num_threads``, which
    libtorch_cpu does not export. Phones have no MKL: this is the host wheel's problem only."""
    import ctypes

    setter = getattr(libtorch_cpu(), "mkl_serv_set_num_threads", None)
    if setter is None:
        return False
    setter.argtypes = [ctypes.c_int]
    setter(1)
    return True


def libtorch_cpu():
    """torch's own libtorch_cpu (ctypes), which carries MKL on x86 Linux; None where it is not found."""
    import ctypes

    import torch

    try:
        return ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:
        return None


def resident_bytes(rt, artifact: Artifact, root: Path) -> int:
    """RSS that keeping every adapter's program loaded is expected to cost. Per program: its packed
    copy of the base (about the size of foundation.ptd), its ``.pte``, and its memory-planned
    outputs, which the pybindings allocate zero-filled at load. A program with full logits
    (``meta["logits"]`` not ``"last"``: bundles written before last-position logits) plans the
    logits of every position of the longest prefill (2815 x 151936 fp32 = 1.7 GB at qwen2.5-0.5b,
    the bulk of it; measured there: 6.75 GB for three programs, this gave 6.9); a last-position
    program plans one row. Plus the mapped foundation once."""
    files = {role: Path(root) / rel for role, rel in artifact.files.items()}
    data = files[FOUNDATION].stat().st_size if FOUNDATION in files else 0
    total = data
    for role, path in files.items():
        if role.startswith(("adapter:", "model:")):
            meta = rt._load_program(str(path)).method_meta("forward")
            planned = sum(meta.output_tensor_meta(i).nbytes() for i in range(meta.num_outputs())
                          if meta.output_tensor_meta(i).is_memory_planned())
            total += data + path.stat().st_size + planned
    return total


def choose_residency(programs: Residency, rt, artifact: Artifact, root: Path) -> Residency:
    """ALL or ONE. AUTO keeps every program of an external export resident when that needs at most
    half the available memory; fused programs are whole models, kept one at a time."""
    if programs is not Residency.AUTO:
        return programs
    if not artifact.external or len(artifact.adapters) < 2:
        return Residency.ONE
    from .report import available_bytes

    avail = available_bytes()
    fits = avail is None or resident_bytes(rt, artifact, root) <= avail // 2
    return Residency.ALL if fits else Residency.ONE


class ExecuTorchRunner(ArtifactRunner):
    """External mode runs ``<adapter>.pte`` with the shared ``foundation.ptd``; fused mode the
    adapter's self-contained ``.pte``. The K/V cache lives inside the program (in-place buffers);
    positions past the current one are never read, so resetting is rewinding the position to 0.

    Residency (``programs``): with ``ALL`` every adapter's program is loaded at start and warmed
    with one step (its first step packs the base weights for XNNPACK, seconds at real size), so a
    switch selects a resident program and rewinds. With ``ONE`` a switch frees the program and loads
    the next, which packs again on its first step. An app does the same with one ``Module`` per
    adapter kept loaded, or, where the runtime is built with XNNPACK's weight cache (the Android and
    Apple presets), with Modules that share the packed base.

    Logits: a program exported with last-position logits (``artifact.meta["logits"] == "last"``)
    returns one row per call, so ``prefill`` returns ``[1, vocab]`` (``returns_all_positions`` is
    False); older bundles return every position.

    Prefix reuse: a snapshot is the program itself with its cache (the runtime has no copy-out);
    restoring it is switching to that program and rewinding. A program a snapshot holds is never
    written below the snapshot's length: such a write loads a fresh program first.
    """

    has_bare_base = False  # one program per adapter

    def __init__(self, artifact: Artifact, root: Path, max_seq_len: int | None = None, threads: int | None = None,
                 programs: Residency = Residency.AUTO):
        if max_seq_len is not None and artifact.max_seq_len is not None and max_seq_len > artifact.max_seq_len:
            raise MemloraError(f"max_seq_len {max_seq_len} exceeds the exported cache ({artifact.max_seq_len})",
                               fix="re-export with a larger --max-seq-len")
        super().__init__(artifact, root, max_seq_len)
        self.returns_all_positions = artifact.meta.get("logits", "all") != "last"
        self._rt = _import_runtime()
        _limit_openmp()
        threads = threads or artifact.meta.get("threads")
        if threads:  # the process-wide XNNPACK threadpool
            self._rt._unsafe_reset_threadpool(int(threads))
            self.threads = int(threads)
        self._data = self.file(FOUNDATION) if self.external else None
        self._module = None
        self._module_key: str | None = None
        self._pinned: dict[str | None, tuple[object, int]] = {}  # adapter -> (program, kept length)
        self.programs = choose_residency(Residency.parse(programs), self._rt, artifact, self.root)
        self._resident: dict[str | None, object] = {}
        if self.programs is Residency.ALL:
            self._resident = {name: self._warm(self._load_program(name)) for name in self.adapters}
        self.start()

    def _load_program(self, name: str | None):
        pte = self.file(self.model_role(name))
        kwargs = {"data_path": str(self._data)} if self._data is not None else {}
        with native_stderr_captured():
            return self._rt._load_for_executorch(str(pte), **kwargs)

    def _warm(self, program):
        """One step at position 0, so the program's weights are packed now rather than on the first
        real step; what it writes to the cache is overwritten by the next prefill from 0."""
        self._run(program, [0], 0)
        return program

    def _activate(self, name: str | None) -> None:
        if self._module_key == name:
            return
        self._module = None  # free a non-resident program first (unless a snapshot keeps it)
        pinned = self._pinned.get(name)
        if pinned is not None:
            self._module = pinned[0]
        else:
            resident = self._resident.get(name)
            self._module = resident if resident is not None else self._load_program(name)
        self._module_key = name

    def _save(self):
        self._pinned[self.active] = (self._module, self.pos)
        return self._module

    def _load(self, state) -> None:
        self._module = state

    def drop_prefixes(self) -> None:
        super().drop_prefixes()
        self._pinned.clear()

    def _run(self, program, part: list[int], pos: int) -> np.ndarray:
        import torch  # the pybindings take torch tensors

        args = [torch.tensor([part], dtype=torch.long), torch.tensor([pos], dtype=torch.long)]
        if _first_forward_done[0]:
            out = program.forward(args)
        else:
            with native_stderr_captured():
                out = program.forward(args)
            _first_forward_done[0] = True
        return out[0][0].float().numpy()

    def _forward(self, ids: list[int]) -> np.ndarray:
        pinned = self._pinned.get(self._module_key)
        if pinned is not None and pinned[0] is self._module and self.pos < pinned[1]:
            self._module = self._load_program(self._module_key)  # keep the snapshot's cache intact
        cap = self.artifact.max_seq_len
        chunk = (cap or len(ids) + 1) - 1  # the program takes at most max_seq_len-1 at once
        rows, pos = [], self.pos
        for i in range(0, len(ids), chunk):
            part = ids[i:i + chunk]
            rows.append(self._run(self._module, part, pos))
            pos += len(part)
        # last-position programs give one row per call: the prompt's last row is the last chunk's
        return np.concatenate(rows, axis=0) if self.returns_all_positions else rows[-1]

    def _close(self) -> None:
        self._module = None
        self._module_key = None
        self._pinned.clear()
        self._resident.clear()
