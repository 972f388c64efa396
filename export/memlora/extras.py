"""The bundle extras ``memlora export`` writes beside its artifacts: ``prompts/``,
``conformance.json`` and the optional ``embedder/`` (exported to ONNX, with parity)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .conformance import TOKENIZER_SAMPLES, build_conformance
from .core.errors import MemloraError, ParityFailure
from .core.manifest import Manifest


def write_bundle_extras(root: Path, manifest: Manifest, reference, embedder: str | None = None) -> None:
    """Write ``prompts/``, ``conformance.json`` and (``embedder`` given) ``embedder/`` into the
    bundle being built at ``root``, and record them in ``manifest`` (updated in place).

    ``reference`` is the PyTorch runner of the bundle's source; the caller owns (and closes) it.
    """
    from tokenizers import Tokenizer

    from .memory import load_templates, write_templates

    root = Path(root)
    write_templates(root / "prompts")
    templates = load_templates(root / "prompts")
    tokenizer = Tokenizer.from_file(str(root / manifest.tokenizer))
    adapters = [a["name"] for a in manifest.adapters] or list(reference.adapters)
    doc = build_conformance(tokenizer, manifest.model["chat_format"], templates, reference, adapters)
    (root / "conformance.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    manifest.prompts, manifest.conformance = "prompts", "conformance.json"
    if embedder:
        manifest.embedder = add_embedder(root, embedder)


def check_embedder_arg(name_or_path: str) -> None:
    """Fail fast (before any model is loaded) on an ``--embedder`` that is neither a preset nor an
    encoder folder."""
    from .tasks.embedder import EMBEDDER_PRESETS

    path = Path(name_or_path)
    if name_or_path in EMBEDDER_PRESETS and not path.exists():
        return
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise MemloraError("not an encoder folder (needs config.json and tokenizer.json)", path,
                           f"pass --embedder {' or '.join(EMBEDDER_PRESETS)} or a BERT-like HF encoder folder")
    from .tasks.embedder_text import read_pooling

    read_pooling(path)  # an unsupported pooling is refused before any model is loaded


def add_embedder(root: Path, name_or_path: str) -> dict:
    """Export the embedder (``tiny`` or an HF encoder folder) to ``root/embedder/`` with parity."""
    from .backends.onnx.export import export_encoder
    from .backends.onnx.runner import load_encoder
    from .tasks.embedder import BATCHING, TextEmbedder, embedder_parity, resolve_embedder

    out = Path(root) / "embedder"
    with tempfile.TemporaryDirectory(prefix="memlora-emb-") as work:
        task = resolve_embedder(name_or_path, Path(work))
        info = export_encoder(task, out)
        shutil.copy(task.tokenizer_file, out / "tokenizer.json")
        exported = TextEmbedder.from_file(out / "tokenizer.json", load_encoder(out / info["files"]["model"]),
                                          task.max_length)
        parity = embedder_parity(exported, task.reference(), [t for t in TOKENIZER_SAMPLES if t][:6],
                                 standard=task.standard())
    if not parity["passed"]:
        raise ParityFailure(f"embedder parity failed: max |diff| {parity['max_abs_diff']:.2e}, min cosine vs "
                            f"the standard pipeline {parity.get('standard_min_cosine', float('nan')):.6f}",
                            out, "report this encoder")
    return {"source": task.source, "dim": task.dim, "max_length": task.max_length, **task.pooling.to_json(),
            "pad_id": task.pad_id, "batching": BATCHING, "tokenizer": "embedder/tokenizer.json",
            "files": {"onnx": f"embedder/{info['files']['model']}"}, "ops": info["ops"], "parity": parity}
