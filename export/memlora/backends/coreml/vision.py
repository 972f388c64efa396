"""Core ML for an SVLM: the vision tower as its own ``vision.mlpackage`` (what Apple's FastVLM
ships), fixed shape, float32 input in 0..255 (Core ML tensors have no uint8), rescale/normalise
and projector inside.

Numerics are checked off a Mac with memlora's MIL evaluator (``memlora.backends.coreml.mil``), which gets
the ``conv`` op here (the patch embedding). Not done yet: the ``embed`` and ``vqa`` functions (a
Core ML decoder on embeddings) in the multifunction package; the text adapters export through the
Core ML text backend as usual.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from ...core.artifact import Artifact
from ...core.config import ExportSpec, Precision, Quant
from ...core.errors import ExportFailure, MemloraError

NAME = "coreml"


def _conv(a, op):
    """MIL ``conv`` (NCHW, groups=1), by summing one matmul per kernel tap."""
    x, w = np.asarray(a["x"], np.float32), np.asarray(a["weight"], np.float32)
    if int(a.get("groups", 1)) != 1:
        raise MemloraError("grouped conv is not in memlora's MIL evaluator", fix="check this export on a Mac")
    sh, sw = (int(s) for s in a.get("strides", (1, 1)))
    dh, dw = (int(d) for d in a.get("dilations", (1, 1)))
    pad = [int(p) for p in a.get("pad", (0, 0, 0, 0))]
    if str(a.get("pad_type", "valid")) not in ("valid", "custom"):
        raise MemloraError(f"conv pad_type {a.get('pad_type')} is not in memlora's MIL evaluator",
                           fix="check this export on a Mac")
    if str(a.get("pad_type", "valid")) == "valid":
        pad = [0, 0, 0, 0]
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (wd - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, co, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    if a.get("bias") is not None:
        y += np.asarray(a["bias"], np.float32).reshape(1, -1, 1, 1)
    return y


def _avg_pool(a, op):
    """MIL ``avg_pool`` (NCHW, valid padding, no ceil mode): Gemma3's projector pooling."""
    x = np.asarray(a["x"], np.float32)
    kh, kw = (int(k) for k in a["kernel_sizes"])
    sh, sw = (int(s) for s in a["strides"])
    pad = [int(p) for p in a.get("pad", (0, 0, 0, 0))] if str(a.get("pad_type", "valid")) == "custom" else [0]
    if str(a.get("pad_type", "valid")) not in ("valid", "custom") or any(pad) or bool(a.get("ceil_mode", False)):
        raise MemloraError("avg_pool with padding is not in memlora's MIL evaluator", fix="check this export on a Mac")
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            y += x[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
    return y / (kh * kw)


def _register_ops() -> None:
    from .mil import ops as mil_eval

    mil_eval.OPS.setdefault("conv", _conv)
    mil_eval.OPS.setdefault("avg_pool", _avg_pool)


def export(task, spec: ExportSpec, out_dir: Path) -> Artifact:
    import coremltools as ct
    import torch

    from .export import _quiet_coremltools
    from ...tasks.vision import VisionEncoder

    if spec.quant is not Quant.NONE:
        raise MemloraError("Core ML vision export is float only", fix="use --quant none with --backend coreml")
    out_dir = Path(out_dir)
    sub = Path("coreml") / f"vlm-{spec.adapter_mode.value}-{spec.quant.value}-{spec.precision.value}"
    (out_dir / sub).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tile = task.contract.tile
    enc = VisionEncoder(task).eval()
    try:
        with torch.no_grad():
            ep = torch.export.export(enc, (torch.zeros(1, 3, tile, tile),)).run_decompositions({})
        precision = ct.precision.FLOAT16 if spec.precision is Precision.FP16 else ct.precision.FLOAT32
        with _quiet_coremltools():
            model = ct.convert(ep, inputs=[ct.TensorType("pixel_values", shape=(1, 3, tile, tile), dtype=np.float32)],
                               outputs=[ct.TensorType("image_features", dtype=np.float32)],
                               minimum_deployment_target=getattr(ct.target, spec.coreml.deployment_target), compute_precision=precision,
                               convert_to="mlprogram", skip_model_load=True)
    except Exception as e:  # torch.export / coremltools raise many types
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ExportFailure(f"Core ML conversion of the {task.family.model_type} vision encoder failed: {first}",
                            task.info.path, "report this model; try --backend onnx") from None
    files = {"vision": str(sub / "vision.mlpackage")}
    model.save(str(out_dir / files["vision"]))
    ops = dict(Counter(op.op_type for op in model._mil_program.functions["main"].operations).most_common())
    size = sum(p.stat().st_size for p in (out_dir / files["vision"]).rglob("*") if p.is_file())
    meta = {"kind": "vision-language", "graphs": ["vision_encoder"], "precision": spec.precision.value,
            "target": spec.coreml.deployment_target, "ops": ops, "file_bytes": {"vision": size},
            "export_seconds": round(time.perf_counter() - t0, 2), "numerics": "memlora MIL evaluator (NumPy)",
            "not_exported": "embed and vqa functions (decoder on embeddings) in the multifunction package"}
    return Artifact(NAME, spec.adapter_mode, spec.quant, [], files, None, meta, precision=spec.precision)


def encoder_parity(task, artifact: Artifact, root: Path, samples) -> dict:
    """The converted MIL program (as saved) vs the torch wrapper, with another image as control."""
    import torch

    from .mil import MilFunction, load_program
    from ...tasks.vision import VisionEncoder
    from ...vision.parity import ENCODER_COSINE, ENCODER_TOL, _cos, _rel
    from ...vision.preprocess import pixels

    _register_ops()
    fn = MilFunction(load_program(Path(root) / artifact.files["vision"]), "main")
    enc = VisionEncoder(task).eval()
    outs, wants = [], []
    for s in samples[:2]:
        x = pixels(s.image, task.contract).astype(np.float32)
        got = fn.run({"pixel_values": x}, None)
        outs.append(np.asarray(got["image_features"] if isinstance(got, dict) else got)[0])
        with torch.no_grad():
            wants.append(enc(torch.from_numpy(x))[0].numpy())
    level = artifact.precision.value
    res = {"max_rel": _rel(outs[0], wants[0]), "cosine": _cos(outs[0], wants[0]),
           "negative_control_max_rel": _rel(outs[1], wants[0]), "level": level}
    failures = []
    if level in ENCODER_TOL and res["max_rel"] > ENCODER_TOL[level]:
        failures.append(f"encoder relative error {res['max_rel']:.2e} > {ENCODER_TOL[level]}")
    if level in ENCODER_COSINE and res["cosine"] < ENCODER_COSINE[level]:
        failures.append(f"encoder cosine {res['cosine']:.5f} < {ENCODER_COSINE[level]}")
    if res["negative_control_max_rel"] < 100 * max(res["max_rel"], 1e-6) and level == "fp32":
        failures.append("encoder negative control (another image) is not far above the error")
    return {"encoder": res, "numerics": artifact.meta["numerics"], "adapters": [], "passed": not failures,
            "failures": failures}
