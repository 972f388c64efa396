"""Compressed constants (``constexpr_*`` ops) materialised once, as the runtime does on load."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ....core.errors import MemloraError
from .dtypes import DTYPES as _DTYPES
from .dtypes import FIX_UNKNOWN as _FIX_UNKNOWN


# --- constants and compression -----------------------------------------------------------------

def _blockwise_shift_scale(a):
    data = a["data"].astype(np.float32)
    scale = a["scale"].astype(np.float32)
    offset = a.get("offset")
    if offset is not None:
        offset = offset.astype(np.float32)
    # Repeat each scale over its block: block[i] = data.shape[i] / scale.shape[i].
    for axis, (d, s) in enumerate(zip(data.shape, scale.shape)):
        if d % s:
            raise MemloraError(f"scale dim {s} does not divide data dim {d}", fix="re-run memlora export")
        scale = np.repeat(scale, d // s, axis=axis)
        if offset is not None:
            offset = np.repeat(offset, d // s, axis=axis)
    return scale * (data - offset if offset is not None else data)


def _affine_dequantize(a):
    q = a["quantized_data"].astype(np.float32)
    axis = int(a["axis"]) % q.ndim
    zp, scale = a["zero_point"].astype(np.float32), a["scale"].astype(np.float32)
    if zp.ndim:
        zp = zp.reshape([-1 if i == axis else 1 for i in range(q.ndim)])
    if scale.ndim:
        scale = scale.reshape([-1 if i == axis else 1 for i in range(q.ndim)])
    return scale * (q - zp)


def _lut_to_dense(a):
    indices, lut = a["indices"].astype(np.int64), a["lut"]
    if "shape" in a and a["shape"] is not None and indices.ndim == 1:  # iOS16 layout: packed, flat lut
        raise MemloraError("iOS16 packed palettization is not implemented", fix=_FIX_UNKNOWN)
    vector_axis = a.get("vector_axis")
    if vector_axis is not None and lut.shape[-1] != 1:
        raise MemloraError("vector palettization is not implemented", fix=_FIX_UNKNOWN)
    lut = lut[..., 0]  # [*blocks, n_entries]
    out = np.empty(indices.shape, lut.dtype)
    blocks = lut.shape[:-1]
    reps = [d // b for d, b in zip(indices.shape, blocks)]
    for block in np.ndindex(*blocks):
        sl = tuple(slice(i * r, (i + 1) * r) for i, r in zip(block, reps))
        out[sl] = lut[block][indices[sl]]
    return out


CONSTEXPR: dict[str, Callable] = {
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_lut_to_dense": _lut_to_dense,
    "constexpr_cast": lambda a: a["source_val"].astype(_DTYPES[str(a["output_dtype"])]),
}
