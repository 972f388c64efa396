"""``memlora export`` for an SVLM: model + four adapters -> a bundle with parity per graph.

Called by :func:`memlora.export.run_export` when ``--model`` is a vision preset or a folder of a
vision family. Everything cheap is checked first (specs, backends, --out, the folder, the
processor config, every adapter, vision-tower targets) before a weight is loaded; the bundle is
written through the same atomic folder as text bundles, so a failure leaves nothing behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..core.bundle import atomic_dir, write_manifest
from ..core.config import BackendName
from ..core.errors import MemloraError
from ..core.progress import steps
from .conformance import add_vision_conformance

VQA_PROMPT = ("Look at the picture.", "")
PARITY_SAMPLES = 2
CONFORMANCE_IMAGES = 3


def is_vision_source(model: str | None) -> bool:
    """True for a vision preset name or a folder whose config.json is a vision family."""
    from .families import is_vision
    from .presets import VISION_PRESETS

    if not model:
        return False
    if model in VISION_PRESETS and not Path(model).exists():
        return True
    cfg = Path(model) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return is_vision(json.loads(cfg.read_text()).get("model_type"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def backend_module(name: BackendName):
    """The vision-language module of backend ``name`` (``Backend.vision()``)."""
    from ..backends import get_backend

    return get_backend(name).vision()


def resolve_vision(model: str, adapters: dict[str, Path], workdir: Path):
    """Preset or folder -> (info, validated adapters, adapter dirs, source record)."""
    from .model_io import inspect_vlm_dir, read_vision_adapters
    from .presets import VISION_PRESETS, write_vision_preset

    record: dict
    if model in VISION_PRESETS and not Path(model).exists():
        model_dir, preset_adapters = write_vision_preset(model, workdir / model)
        record = {"preset": model}
        if not adapters:
            adapters, record["adapters"] = preset_adapters, "preset"
    else:
        model_dir, record = Path(model), {"path": str(Path(model).resolve())}
    info = inspect_vlm_dir(model_dir)
    if not adapters:
        raise MemloraError("no adapters given", model_dir, "pass --adapter NAME=PATH (extract, update, answer, vqa)")
    for name, path in adapters.items():
        if not Path(path).is_dir():
            raise MemloraError("adapter folder not found", path, f"fix the path in --adapter {name}=PATH")
    loaded = read_vision_adapters(info, adapters)
    record["adapter_dirs"] = {n: str(Path(p).resolve()) for n, p in adapters.items()}
    return info, loaded, {n: Path(p) for n, p in adapters.items()}, record


def _backend_modules(opts, specs) -> dict:
    """Each spec's backend vision module; fails early when a backend or the embedder is unusable."""
    from ..backends import get_backend

    modules = {}
    for spec in specs:
        modules[spec.backend] = backend_module(spec.backend)
        reason = get_backend(spec.backend).available()
        if reason:
            raise MemloraError(f"backend {spec.backend.value} is not available here: {reason}",
                               fix="install it or choose another --backend")
    if opts.embedder:
        from ..extras import check_embedder_arg

        check_embedder_arg(opts.embedder)
    return modules


def _export_spec(spec, mod, task, tmp: Path, manifest, reference, samples, prompts, text_prompts, opts,
                 progress, job) -> None:
    """One spec's artifact (plus its text-layout artifact when the backend keeps some adapters as text)."""
    key = f"{spec.backend.value}/{spec.adapter_mode.value}/{spec.quant.value}"
    progress.update(job, description=f"export {key}")
    t0 = time.perf_counter()
    # Core ML external: the text adapters' functions share the vision artifact's package, so the
    # backend writes both artifacts at once.
    artifacts = mod.export_artifacts(task, spec, tmp) if hasattr(mod, "export_artifacts") else [mod.export(task, spec, tmp)]
    artifact, shared = artifacts[0], artifacts[1:]
    artifact.meta.setdefault("export_seconds", round(time.perf_counter() - t0, 2))
    if opts.check_parity:
        progress.update(job, description=f"parity {key}")
        artifact.parity = artifact_vision_parity(mod, artifact, tmp, task, reference, samples, prompts,
                                                 text_prompts, min(opts.parity_tokens, 16))
    manifest.artifacts.append(artifact)
    for text in shared:
        if opts.check_parity:
            from ..backends import get_backend
            from ..parity import artifact_parity

            text.parity = artifact_parity(get_backend(spec.backend), text, tmp, reference, text_prompts,
                                          min(opts.parity_tokens, 16))
        manifest.artifacts.append(text)
    text_names = [n for n in task.adapters if not any(n in a.adapters for a in artifacts)]
    if text_names:  # ExecuTorch / Core ML: these adapters keep the text layout
        progress.update(job, description=f"export {key} (text adapters)")
        manifest.artifacts.append(_text_artifact(task, spec, tmp, text_names, reference, text_prompts, opts))
    progress.advance(job)


def run_vision_export(opts, show_progress: bool = True) -> dict:
    """The SVLM path of ``memlora export`` (same options, same bundle rules)."""
    from tokenizers import Tokenizer

    from ..extras import write_bundle_extras
    from .images import make_samples
    from .model_io import build_vision_task
    from .preprocess import expand_prompt
    from .reference import VisionTorchRunner

    specs = opts.specs()
    modules = _backend_modules(opts, specs)
    with tempfile.TemporaryDirectory(prefix="memlora-src-") as work, atomic_dir(opts.out, opts.force) as tmp:
        info, adapters, adapter_dirs, record = resolve_vision(opts.model, opts.adapters, Path(work))
        with steps(show_progress) as progress:
            job = progress.add_task("load model", total=None)
            task = build_vision_task(info, adapters)
            c = task.contract
            manifest = _manifest(info, task, record)
            shutil.copy(info.tokenizer_file, tmp / "tokenizer.json")
            write_preprocess(tmp, task)
            reference = VisionTorchRunner(info.path, adapter_dirs, info.family, c)
            tok = Tokenizer.from_file(str(info.tokenizer_file))
            samples = make_samples(PARITY_SAMPLES, c.tile, seed=1)
            prompts = [expand_prompt(tok.encode(VQA_PROMPT[0]).ids, tok.encode(" " + s.question).ids, c)
                       for s in samples]
            from ..export import prompt_ids

            text_prompts = prompt_ids(info.tokenizer_file)
            progress.update(job, total=len(specs), completed=0)
            for spec in specs:
                _export_spec(spec, modules[spec.backend], task, tmp, manifest, reference, samples, prompts,
                             text_prompts, opts, progress, job)
            progress.update(job, description="prompts, conformance.json")
            write_bundle_extras(tmp, manifest, reference, opts.embedder)
            add_vision_conformance(tmp, task, reference, tok)
        manifest = write_manifest(tmp, manifest)
    return manifest


def artifact_vision_parity(mod, artifact, root: Path, task, reference, samples, prompts, text_prompts,
                           n_tokens: int) -> dict:
    """The parity block of one SVLM artifact (every graph, see ``memlora.vision.parity``)."""
    from .parity import vision_parity

    runner = mod.load(artifact, root)
    try:
        block = vision_parity(runner, reference, task, samples, prompts, text_prompts, backend=artifact.backend.value,
                              quant=artifact.quant.value, precision=artifact.precision.value, n_tokens=n_tokens)
    finally:
        runner.close()
    block["numerics"] = artifact.meta.get("numerics", f"{artifact.backend.value} runtime")
    return block


def recheck_vision_bundle(bundle: Path, manifest: dict, file_failures: list[str], n_tokens: int | None) -> dict:
    """``memlora parity`` for an SVLM bundle: rebuild the source (a preset is regenerated), then
    re-run every artifact's parity (vision artifacts per graph, text ones with the common check)."""
    from tokenizers import Tokenizer

    from ..backends import get_backend
    from ..core.artifact import Artifact
    from ..export import prompt_ids
    from ..parity import artifact_parity
    from .images import make_samples
    from .model_io import build_vision_task
    from .preprocess import expand_prompt
    from .reference import VisionTorchRunner

    src = manifest["model"]["source"]
    with tempfile.TemporaryDirectory(prefix="memlora-src-") as work:
        model = src.get("preset") or src["path"]
        given = {} if src.get("adapters") == "preset" else {n: Path(p) for n, p in src["adapter_dirs"].items()}
        info, adapters, adapter_dirs, _ = resolve_vision(model, given, Path(work))
        task = build_vision_task(info, adapters)
        c = task.contract
        reference = VisionTorchRunner(info.path, adapter_dirs, info.family, c)
        tok = Tokenizer.from_file(str(info.tokenizer_file))
        samples = make_samples(PARITY_SAMPLES, c.tile, seed=1)
        prompts = [expand_prompt(tok.encode(VQA_PROMPT[0]).ids, tok.encode(" " + s.question).ids, c) for s in samples]
        text_prompts = prompt_ids(info.tokenizer_file)
        out = []
        for data in manifest["artifacts"]:
            artifact = Artifact.from_json(data)
            n = n_tokens or 16
            backend = get_backend(artifact.backend)
            if artifact.meta.get("kind") == "vision-language":
                artifact.parity = artifact_vision_parity(backend.vision(), artifact, bundle, task, reference, samples,
                                                         prompts, text_prompts, n)
            else:
                artifact.parity = artifact_parity(backend, artifact, bundle, reference, text_prompts, n)
            out.append(artifact.to_json())
        reference.close()
    passed = not file_failures and all(a["parity"]["passed"] for a in out)
    return dict(manifest, artifacts=out, file_failures=file_failures, passed=passed)


def _text_artifact(task, spec, tmp: Path, names: list[str], reference, text_prompts, opts):
    """The text-only adapters through the text backend on the SVLM's language model (ExecuTorch
    external: one shared foundation.ptd + a small .pte per adapter)."""
    from ..backends import get_backend
    from ..parity import artifact_parity
    from ..tasks.vision import as_decoder_task

    backend = get_backend(spec.backend)
    t0 = time.perf_counter()
    artifact = backend.export(as_decoder_task(task, names), spec, tmp)
    artifact.meta.setdefault("export_seconds", round(time.perf_counter() - t0, 2))
    artifact.meta["kind"] = "text"
    artifact.meta["language_model_of"] = task.family.model_type
    if opts.check_parity:
        artifact.parity = artifact_parity(backend, artifact, tmp, reference, text_prompts,
                                          min(opts.parity_tokens, 16))
    return artifact


def _manifest(info, task, record):
    from ..core.manifest import Manifest

    cfg = task.text_config
    return Manifest.from_json({
        "memlora_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "family": info.family.model_type, "kind": "vision-language",
            "text_family": info.family.text_model_type, "chat_format": info.family.text.chat_format,
            "source": record, "config_sha256": info.config_sha256, "vocab_size": cfg.vocab_size,
            "num_layers": cfg.num_hidden_layers, "hidden_size": cfg.hidden_size,
            "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
        },
        "vision": {"preprocess": "vision/preprocess.json", "tile": task.contract.tile,
                   "tokens_per_image": task.contract.tokens_per_image,
                   "image_token_id": task.contract.image_token_id,
                   "bidirectional_image": task.contract.bidirectional_image},
        "tokenizer": "tokenizer.json",
        "adapters": [a.summary() for a in task.adapters.values()],
        "artifacts": [],
    })


def write_preprocess(root: Path, task) -> None:
    """``vision/preprocess.json`` (memlora's contract + the HF processor config verbatim) and the
    processor config file itself."""
    out = Path(root) / "vision"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocess.json").write_text(json.dumps(task.contract.to_json(task.info.processor_config), indent=2))
    shutil.copy(task.info.path / "preprocessor_config.json", out / "preprocessor_config.json")
