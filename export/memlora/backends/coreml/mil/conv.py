"""MIL ``conv`` and ``avg_pool`` for the NumPy evaluator: what vision towers add to a decoder's op
set (the patch embedding; Gemma3's projector pooling)."""
from __future__ import annotations

import numpy as np

from ....core.errors import MemloraError


def conv(a, op):
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


def avg_pool(a, op):
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
