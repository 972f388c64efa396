"""``memlora export``: model + adapters -> a bundle with artifacts, tokenizer, manifest, parity."""
from __future__ import annotations

import gc

import itertools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .backends import get_backend
from .core.bundle import atomic_dir, scratch_dir, write_manifest
from .core.manifest import Manifest
from .core.config import (AdapterMode, BackendName, CoreMLConfig, ExecuTorchConfig, ExportSpec, OnnxConfig,
                          Precision, Quant)
from .extras import check_embedder_arg, write_bundle_extras
from .core.errors import MemloraError
from .parity import DEFAULT_PROMPTS, artifact_parity
from .core.progress import steps
from .sources.resolve import resolve
from .stock.context import PHONE_DEFAULT, choose_context, context_need
from .stock.package import package_artifact, write_tokenizer_config


@dataclass
class ExportOptions:
    """Everything ``memlora export`` takes. Lists multiply: 2 backends x 2 modes = 4 artifacts."""

    out: Path
    model: str | None = None
    adapters: dict[str, Path] = field(default_factory=dict)
    backends: list[BackendName] = field(default_factory=lambda: [BackendName.ONNX])
    adapter_modes: list[AdapterMode] = field(default_factory=lambda: [AdapterMode.EXTERNAL])
    quants: list[Quant] = field(default_factory=lambda: [Quant.NONE])
    precision: Precision = Precision.FP32
    group_size: int = 32
    max_seq_len: int | None = None  # None: sized from the bundle's own prompts (memlora.stock.context)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    coreml: CoreMLConfig = field(default_factory=CoreMLConfig)
    executorch: ExecuTorchConfig = field(default_factory=ExecuTorchConfig)
    parity_tokens: int = 32
    check_parity: bool = True
    force: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    embedder: str | None = None  # "tiny" or an HF encoder folder; adds embedder/
    stock_check: bool = False  # run every artifact in its stock runtime too (memlora.stock.check)

    def __post_init__(self) -> None:
        if not 1 <= self.parity_tokens <= 4096:
            raise MemloraError(f"--parity-tokens {self.parity_tokens} is out of range",
                               fix="use 1..4096 greedy tokens per prompt (or --no-parity)")

    def specs(self, max_seq_len: int | None = None) -> list[ExportSpec]:
        ctx = max_seq_len or self.max_seq_len or PHONE_DEFAULT
        return [ExportSpec(b, m, q, self.precision, self.group_size, ctx, self.onnx, self.coreml,
                           self.executorch)
                for b, m, q in itertools.product(self.backends, self.adapter_modes, self.quants)]


def prompt_ids(tokenizer_file: Path, prompts=DEFAULT_PROMPTS) -> list[list[int]]:
    """Real text through the model's own tokenizer (random ids can hide real-text failures)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    return [tok.encode(p, add_special_tokens=False).ids for p in prompts]


def run_export(opts: ExportOptions, show_progress: bool = True) -> dict:
    """Export, check parity, write the bundle atomically; return the manifest."""
    from .vision.export import is_vision_source, run_vision_export

    if is_vision_source(opts.model):  # an SVLM: three graphs per artifact (memlora.vision)
        return run_vision_export(opts, show_progress)
    specs = opts.specs()  # validates enums and ranges before anything heavy
    if opts.embedder:
        check_embedder_arg(opts.embedder)
    for spec in specs:
        reason = get_backend(spec.backend).available()
        if reason:
            raise MemloraError(f"backend {spec.backend.value} is not available here: {reason}",
                               fix="install it or choose another --backend")
    # atomic_dir checks --out (exists, --force, writable) before anything is loaded.
    with scratch_dir("memlora-src-") as work, atomic_dir(opts.out, opts.force) as tmp:
        src = resolve(opts.model, opts.adapters, Path(work), allow_pickle=opts.allow_pickle,
                      trust_remote_code=opts.trust_remote_code)
        # The context every artifact holds, sized from the bundle's own prompts (refused when they
        # cannot fit), before any weight is loaded.
        need = context_need(src.info.tokenizer_file, src.info.family.chat_format)
        context = choose_context(opts.max_seq_len, need)
        specs = opts.specs(context)
        manifest = _base_manifest(src)
        manifest.extra["context"] = dict(need.to_json(), length=context)
        shutil.copy(src.info.tokenizer_file, tmp / "tokenizer.json")
        manifest.extra["tokenizer_config"] = write_tokenizer_config(tmp, src.info, context)
        from .tasks.decoder import build_decoder_task

        with steps(show_progress) as progress:
            job = progress.add_task("prompts, conformance.json" + (", embedder" if opts.embedder else ""), total=None)
            reference = _extras_first(src, tmp, manifest, opts)
            progress.update(job, description="load model")
            task = build_decoder_task(src.info, src.adapters)
            ids = prompt_ids(src.info.tokenizer_file)
            progress.update(job, total=len(specs), completed=0)
            for spec in specs:
                progress.update(job, description=f"export {spec.backend.value}/{spec.adapter_mode.value}/{spec.quant.value}")
                backend = get_backend(spec.backend)
                artifact = backend.export(task, spec, tmp)
                artifact.stock = package_artifact(artifact, tmp, src.info, context)  # stock runtime files
                if reference is not None:
                    progress.update(job, description=f"parity {artifact.key}")
                    artifact.parity = artifact_parity(backend, artifact, tmp, reference, ids, opts.parity_tokens)
                manifest.artifacts.append(artifact)
                progress.advance(job)
        manifest = write_manifest(tmp, manifest)
    if opts.stock_check:  # on the renamed bundle: the runtimes see the paths an app would
        from .stock.check import stock_check

        manifest = stock_check(opts.out)
    return manifest


def _extras_first(src, tmp: Path, manifest: Manifest, opts: ExportOptions):
    """Write prompts/, conformance.json (and embedder/) before any weight of the export loads;
    return the PyTorch reference when parity needs it, else close it.

    First, not last: the lowering's freed memory stays with the process, and a reference loaded
    after it sits on top (an ExecuTorch int4 export at 0.5B with three adapters peaked at 8.5 GB
    that way, 5.7 GB before the reference loaded)."""
    from .backends.pytorch import reference_runner

    reference = reference_runner(src.info.path, src.adapter_dirs, src.info.family.attn_implementation)
    write_bundle_extras(tmp, manifest, reference, opts.embedder)
    if opts.check_parity:
        return reference
    reference.close()
    gc.collect()
    return None


def _base_manifest(src) -> Manifest:
    info = src.info
    cfg = info.config
    return Manifest(
        memlora_version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        model={
            "family": info.family.model_type,
            "chat_format": info.family.chat_format,
            "source": src.record,
            "config_sha256": info.config_sha256,
            "vocab_size": cfg.get("vocab_size"),
            "num_layers": cfg.get("num_hidden_layers"),
            "hidden_size": cfg.get("hidden_size"),
            "bos_token_id": cfg.get("bos_token_id"),
            "eos_token_id": cfg.get("eos_token_id"),
        },
        tokenizer="tokenizer.json",
        adapters=[a.summary() for a in src.adapters.values()],
    )
