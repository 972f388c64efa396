"""Open an exported bundle for the memory loop: runner, tokenizer, templates, chat format, embedder.

``open_bundle(bundle, backend="onnx")`` picks the matching artifact from the manifest and loads
it through ``memlora.backends.get_backend(name).load``; ``backend="pytorch"`` instead rebuilds the
bundle's source model and adapters (regenerating a preset) and runs them eagerly with PEFT, the
reference the exported runners are compared against. A :class:`Session` then makes a
:class:`~memlora.memory.MemoryLoop` over any store.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .core.artifact import Artifact
from .core.config import Residency
from .core.runner import Runner
from .core.errors import MemloraError

log = logging.getLogger(__name__)


@dataclass
class Session:
    """Everything the memory loop needs from one bundle on one backend."""

    bundle: Path
    manifest: dict
    backend: str
    runner: Runner
    tokenizer: object  # tokenizers.Tokenizer
    templates: object  # memlora.memory.Templates
    chat_format: str
    eos_ids: tuple[int, ...]
    artifact: Artifact | None = None
    embedder: object | None = None  # Callable[[Sequence[str]], np.ndarray]
    templates_source: str = "bundle"
    _keep: list = field(default_factory=list, repr=False)  # temp dirs alive while the session is

    def loop(self, store, settings=None):
        """A :class:`~memlora.memory.MemoryLoop` over this session and ``store``; a bundle without
        the adapters the loop runs (extract, update, answer by default) is a one-line error."""
        from .memory import LoopSettings, MemoryLoop

        wanted = (settings or LoopSettings()).adapters
        missing = sorted(a for a in wanted.values() if a is not None and a not in self.runner.adapters)
        if missing:
            raise MemloraError(f"bundle has adapters {sorted(self.runner.adapters)}; the memory loop needs "
                               f"{', '.join(missing)} too", self.bundle,
                               "re-export with --adapter extract=PATH --adapter update=PATH --adapter answer=PATH")
        return MemoryLoop(self.runner, self.tokenizer, store, self.chat_format, self.templates,
                          self.embedder, settings)

    def file_failures(self) -> list[str]:
        """Files that differ from the manifest (missing, size or sha256): a tampered or torn copy."""
        from .core.bundle import verify_files

        return verify_files(self.bundle, self.manifest)

    def describe(self) -> str:
        """One line: backend, artifact and embedder."""
        what = self.artifact.key if self.artifact else "pytorch eager (PEFT reference)"
        emb = "embedder" if self.embedder is not None else "text search (FTS5/BM25)"
        return f"{what}; retrieval: {emb}; prompts: {self.templates_source}"

    def close(self) -> None:
        self.runner.close()
        for tmp in self._keep:
            tmp.cleanup()
        self._keep.clear()


def select_artifact(manifest: dict, backend: str, adapter_mode: str | None = None,
                    quant: str | None = None) -> Artifact:
    """The manifest's artifact for ``backend`` (preferring external adapters and no quantization
    unless told); a one-line error naming what the bundle does have otherwise."""
    rows = [a for a in manifest.get("artifacts", []) if a["backend"] == backend]
    if not rows:
        have = sorted({a["backend"] for a in manifest.get("artifacts", [])}) or ["none"]
        raise MemloraError(f"bundle has no {backend} artifact (it has: {', '.join(have)})",
                           fix=f"re-export with --backend {backend}")
    if adapter_mode is not None:
        rows = [a for a in rows if a["adapter_mode"] == adapter_mode]
    if quant is not None:
        rows = [a for a in rows if a["quant"] == quant]
    if not rows:
        have = ", ".join(f"{a['adapter_mode']}/{a['quant']}" for a in manifest["artifacts"] if a["backend"] == backend)
        raise MemloraError(f"bundle has no {backend} artifact with adapter mode {adapter_mode or 'any'} and "
                           f"quant {quant or 'any'} (it has: {have})", fix="pick one of those")
    rows.sort(key=lambda a: (a["adapter_mode"] != "external", a["quant"] != "none"))
    return Artifact.from_json(rows[0])


def _templates(bundle: Path):
    from .memory import load_templates

    prompts = bundle / "prompts"
    if prompts.is_dir():
        try:
            return load_templates(prompts), "bundle"
        except (OSError, ValueError) as e:
            raise MemloraError(f"bad prompt templates: {e}", prompts, "re-run memlora export") from None
    log.warning("%s has no prompts/ folder; using memlora's built-in templates", bundle)
    return load_templates(), "package (bundle has none)"


def eos_ids(tokenizer, manifest: dict, chat_format: str) -> tuple[int, ...]:
    """The config's eos id(s) plus every single-token stop string of the chat format."""
    from .memory.chat import stop_strings
    from .memory.engine import eos_ids_for

    cfg = manifest["model"].get("eos_token_id")
    ids = [cfg] if isinstance(cfg, int) else list(cfg or [])
    return tuple(dict.fromkeys([*ids, *eos_ids_for(tokenizer, stop_strings(chat_format))]))


def load_embedder(bundle: Path, manifest: dict, backend: str, keep: list, threads: int | None = None):
    """The bundle's embedder as a text embedder, or ``None`` when it has none.

    Exported runtimes use the ONNX embedder graph; ``pytorch`` rebuilds the source encoder.
    """
    entry = manifest.get("embedder")
    if not entry:
        return None
    if backend == "pytorch":
        from .tasks.embedder import build_embedder_task, write_embedder_preset

        src = entry["source"]
        if "preset" in src:
            tmp = tempfile.TemporaryDirectory(prefix="memlora-emb-")
            keep.append(tmp)
            path = write_embedder_preset(Path(tmp.name) / "embedder", src["preset"])
        else:
            path = Path(src["path"])
        return build_embedder_task(path, src).reference()
    from .backends.onnx.runner import load_encoder
    from .tasks.embedder_text import TextEmbedder  # no torch: a runtime process stays small

    encode = load_encoder(bundle / entry["files"]["onnx"], threads)
    return TextEmbedder.from_file(bundle / entry["tokenizer"], encode, int(entry["max_length"]))


def open_bundle(bundle_dir: str | Path, backend: str = "onnx", adapter_mode: str | None = None,
                quant: str | None = None, threads: int | None = None, embedder: bool = True,
                max_seq_len: int | None = None, programs: Residency | str = Residency.AUTO) -> Session:
    """Open ``bundle_dir`` on ``backend`` (onnx, executorch, coreml or pytorch).

    Args:
        adapter_mode, quant: narrow the artifact choice (default: external adapters, no quant).
        threads: intra-op threads of the runtime (default: the runtime's choice).
        embedder: load the bundle's embedder if it has one (else retrieval is FTS5/BM25).
        max_seq_len: the runner's context limit (default: the artifact's; none for growing caches).
        programs: ExecuTorch, how many adapter programs stay loaded (:class:`Residency`; AUTO: all of
            an external export when they fit in memory, so a switch is a selection, not a reload).
    """
    from .backends import get_backend
    from .core.bundle import read_manifest

    bundle = Path(bundle_dir)
    module = get_backend(backend)  # an unknown name fails before the bundle is read
    manifest = read_manifest(bundle)
    tokenizer, chat_format = _tokenizer_and_format(bundle, manifest)
    templates, templates_source = _templates(bundle)
    artifact = None if not module.exports else select_artifact(manifest, module.name.value, adapter_mode, quant)
    reason = module.available()  # Core ML off macOS runs on the MIL evaluator
    if reason:
        raise MemloraError(f"backend {module.name.value} cannot run here: {reason}", fix="choose another --backend")
    runner = module.load(artifact, bundle, threads=threads, max_seq_len=max_seq_len, programs=Residency.parse(programs))
    keep: list = []
    emb = load_embedder(bundle, manifest, module.name.value, keep, threads) if embedder else None
    return Session(bundle, manifest, module.name.value, runner, tokenizer, templates, chat_format,
                   eos_ids(tokenizer, manifest, chat_format), artifact, emb, templates_source, keep)


def _tokenizer_and_format(bundle: Path, manifest: dict):
    from tokenizers import Tokenizer

    from .memory.chat import get_format

    tok_file = bundle / manifest.get("tokenizer", "tokenizer.json")
    if not tok_file.is_file():
        raise MemloraError("bundle has no tokenizer.json", tok_file, "re-run memlora export")
    chat_format = manifest["model"].get("chat_format") or ""
    try:
        get_format(chat_format)
    except KeyError as e:
        raise MemloraError(str(e).strip("'\""), bundle, "re-export with a supported model family") from None
    return Tokenizer.from_file(str(tok_file)), chat_format
