"""Core ML for an SVLM: the vision tower as ``vision.mlpackage`` plus ``embed`` and ``vqa``
functions next to the text adapters' functions.

* ``vision.mlpackage``: ``pixel_values`` float32 ``[1, 3, S, S]`` in 0..255 (Core ML tensors have
  no uint8) -> ``image_features [1, N, D]``; rescale/normalise and projector inside, fixed shape
  (what Apple's FastVLM ships).
* ``embed``: ``input_ids`` int32 ``[1, T]`` -> ``inputs_embeds [1, T, D]`` (Gemma's sqrt(D) scale
  included).
* ``vqa``: the stateful decoder of the text functions on embeddings: ``inputs_embeds [1, T, D]``,
  ``position_ids [1, T]``, ``causal_mask [1, 1, T, E]`` -> ``logits``. The app builds the mask, so
  Gemma3's bidirectional image blocks are just mask entries (see ``tasks.vision.additive_mask``).

external: one multifunction ``memlora.mlpackage`` holds ``base``, the text adapters, ``embed`` and
``vqa`` (LoRA unfused, base weights stored once); the manifest has two artifacts naming that one
package: the text one (``base``/``extract``/``update``/``answer``) and the vision one
(``embed``/``vqa`` + ``vision.mlpackage``). fused: ``vqa.mlpackage`` with ``embed`` and ``vqa``
(LoRA merged); the text adapters get their own fused packages through the text backend.

Numerics are checked off a Mac with memlora's MIL evaluator (``mil-numpy``), never Apple's runtime.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.config import ExportSpec, Quant
from ...core.errors import MemloraError
from ..export_job import ExportJob

NAME = "coreml"
EMBED_FUNCTION = "embed"


def vision_adapters(task) -> list[str]:
    """The adapters that get an embeddings function: ``vqa`` (every adapter when there is none)."""
    return ["vqa"] if "vqa" in task.adapters else list(task.adapters)


def _export_program(job: ExportJob, module, example, dynamic):
    """``torch.export`` with tanh-GELU written out (coremltools would make it exact GELU)."""
    import torch

    from ...tasks.delegable import tanh_gelu_written_out
    from .export import _FIX

    try:
        with torch.no_grad(), tanh_gelu_written_out(module):
            return torch.export.export(module, example, dynamic_shapes=dynamic).run_decompositions({})
    except Exception as e:  # torch.export raises many types
        raise job.fail("torch.export", e, _FIX) from None


def _convert_encoder(job: ExportJob, task, path: Path) -> dict:
    """``vision.mlpackage`` (fixed shape); returns its op histogram."""
    import coremltools as ct
    import torch

    from ...tasks.vision import VisionEncoder
    from .export import _ct_convert, op_histogram

    tile = task.contract.tile
    ep = _export_program(job, VisionEncoder(task).eval(), (torch.zeros(1, 3, tile, tile),), None)
    model = _ct_convert(job, ep, [ct.TensorType("pixel_values", shape=(1, 3, tile, tile), dtype=np.float32)],
                        "image_features")
    model.save(str(path))
    return op_histogram(model)


def _convert_embedding(job: ExportJob, task, path: Path) -> None:
    """The ``embed`` function: ids -> embeddings, token count flexible up to max_seq_len."""
    import coremltools as ct
    import torch

    from ...tasks.vision import TokenEmbedding
    from .export import _ct_convert

    n = job.spec.max_seq_len
    dyn = ({1: torch.export.Dim("tokens", min=1, max=n)},)
    ep = _export_program(job, TokenEmbedding(task).eval(), (torch.zeros(1, 3, dtype=torch.long),), dyn)
    model = _ct_convert(job, ep, [ct.TensorType("input_ids", shape=(1, ct.RangeDim(1, n)), dtype=np.int32)],
                        "inputs_embeds")
    model.save(str(path))


def _vision_functions(vjob: ExportJob, task, names: list[str], tmp: Path, external: bool) -> dict[str, Path]:
    """Single-function packages: ``embed`` and one embeddings decoder per name (LoRA unfused in
    external mode, fused into the weights otherwise)."""
    from ...tasks.lora import fused
    from .export import _convert

    singles = {EMBED_FUNCTION: tmp / f"{EMBED_FUNCTION}.mlpackage"}
    t1 = time.perf_counter()
    _convert_embedding(vjob, task, singles[EMBED_FUNCTION])
    vjob.meta["convert_seconds"][EMBED_FUNCTION] = round(time.perf_counter() - t1, 2)
    for name in names:
        singles[name] = tmp / f"{name}.mlpackage"
        if external:
            _convert(vjob, name, vjob.task.adapters[name], singles[name], embeds=True)
        else:
            with fused(task.model, task.adapters[name]):
                _convert(vjob, name, None, singles[name], embeds=True)
    return singles


def export_artifacts(task, spec: ExportSpec, out_dir: Path) -> list[Artifact]:
    """The vision artifact first; in external mode also the text artifact of the other adapters,
    whose functions share its ``memlora.mlpackage``."""
    from ...tasks.vision import as_decoder_task
    from . import BACKEND, BASE_FUNCTION, PACKAGE, function_name
    from .export import _convert, _save_multifunction, package_bytes, prepare, weight_bytes

    if spec.quant is not Quant.NONE:
        raise MemloraError("Core ML vision export is float only", fix="use --quant none with --backend coreml")
    names = vision_adapters(task)
    text_names = [n for n in task.adapters if n not in names]
    sub = Path("coreml") / f"vlm-{spec.adapter_mode.value}-{spec.quant.value}-{spec.precision.value}"
    vjob = ExportJob(BACKEND, as_decoder_task(task, names), spec, Path(out_dir), sub)
    (vjob.out / sub).mkdir(parents=True, exist_ok=True)
    prepare(vjob)
    vjob.meta.update(kind="vision-language", graphs=["vision_encoder", "token_embedding", "text_decoder"])
    vjob.meta["vision_ops"] = _convert_encoder(vjob, task, vjob.add("vision", "vision.mlpackage"))
    functions = {n: function_name(n) for n in [EMBED_FUNCTION, *names]}
    vjob.meta["functions"] = functions
    out = [vjob]
    with tempfile.TemporaryDirectory(prefix="memlora-coreml-") as tmp:
        singles = _vision_functions(vjob, task, names, Path(tmp), vjob.external)
        if not vjob.external:
            for name in names:  # one package per adapter: embed + its fused decoder
                _save_multifunction({EMBED_FUNCTION: singles[EMBED_FUNCTION], name: singles[name]}, functions,
                                    vjob.add(f"model:{name}", f"{name}.mlpackage"), default=functions[name])
        else:
            tjob = ExportJob.begin(BACKEND, as_decoder_task(task, text_names), spec, Path(out_dir))
            prepare(tjob)
            for name, adapter in {BASE_FUNCTION: None, **tjob.task.adapters}.items():
                singles[name] = Path(tmp) / f"{name}.mlpackage"
                _convert(tjob, name, adapter, singles[name])
            tjob.meta["functions"] = {n: function_name(n) for n in [BASE_FUNCTION, *text_names]}
            package = tjob.add("model", PACKAGE)
            _save_multifunction(singles, tjob.meta["functions"] | functions, package,
                                default=function_name(text_names[0] if text_names else names[0]))
            vjob.files["model"] = tjob.files["model"]
            tjob.meta["kind"], tjob.meta["language_model_of"] = "text", task.family.model_type
            tjob.meta["shared_package_with"] = "vision-language artifact (functions " + ", ".join(functions.values()) + ")"
            tjob.meta["single_package_bytes"] = {n: package_bytes(p) for n, p in singles.items()}
            tjob.meta["package_bytes"], tjob.meta["weight_bytes"] = package_bytes(package), weight_bytes(package)
            if text_names:  # (with no vqa adapter every adapter is an embeddings function)
                out.append(tjob)
    vjob.meta["file_bytes"] = {role: package_bytes(vjob.out / rel) for role, rel in vjob.files.items()}
    return [job.artifact() for job in out]


def export(task, spec: ExportSpec, out_dir: Path) -> Artifact:
    """The vision artifact alone (in external mode the package also holds the text functions)."""
    return export_artifacts(task, spec, out_dir)[0]


def load(artifact: Artifact, root: Path, engine: str | None = None):
    from .vision_runner import VisionCoreMLRunner

    return VisionCoreMLRunner(artifact, Path(root), engine)
