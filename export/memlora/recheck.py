"""``memlora parity BUNDLE``: verify file hashes, rebuild the reference, re-run parity."""
from __future__ import annotations

from pathlib import Path

from .backends import get_backend
from .core.artifact import Artifact
from .core.bundle import read_manifest, verify_files
from .core.errors import MemloraError
from .parity import artifact_parity


def recheck_bundle(bundle: Path, n_tokens: int | None = None) -> dict:
    """Return the manifest with fresh parity blocks, ``file_failures`` and an overall ``passed``."""
    from .backends.pytorch import reference_from_manifest
    from .export import prompt_ids

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    file_failures = verify_files(bundle, manifest)
    if manifest["model"].get("kind") == "vision-language":
        from .vision.export import recheck_vision_bundle

        return recheck_vision_bundle(bundle, manifest, file_failures, n_tokens)
    reference = reference_from_manifest(manifest)
    try:
        ids = prompt_ids(bundle / manifest["tokenizer"])
        artifacts = []
        for data in manifest["artifacts"]:
            artifact = Artifact.from_json(data)
            backend = get_backend(artifact.backend)
            reason = backend.available()
            if reason:
                raise MemloraError(f"cannot re-check {artifact.key}: {reason}", bundle, "install the runtime")
            old = artifact.parity or {}
            broken = [f for f in file_failures if f.split(":")[0] in _paths(artifact)]
            if broken:
                # A file that fails its hash is not run: the runtime's error would only be noise.
                artifact.parity = {"passed": False, "error": "files failed the hash check: " + "; ".join(broken)}
            else:
                artifact.parity = _check(backend, artifact, bundle, reference, ids,
                                         n_tokens or old.get("n_tokens", 32))
            artifacts.append(artifact.to_json())
    finally:
        reference.close()
    passed = not file_failures and all(a["parity"]["passed"] for a in artifacts)
    return dict(manifest, artifacts=artifacts, file_failures=file_failures, passed=passed)


def _paths(artifact: Artifact) -> set[str]:
    return {p for rel in artifact.files.values() for p in (rel, rel + ".data")}


def _check(backend, artifact: Artifact, bundle: Path, reference, ids, n_tokens: int) -> dict:
    try:
        return artifact_parity(backend, artifact, bundle, reference, ids, n_tokens)
    except MemloraError:
        raise
    except Exception as e:  # a runtime refusing a file is a parity failure to report, not a crash
        return {"passed": False, "error": f"{artifact.backend} could not run the artifact: {str(e)[:200]}"}
