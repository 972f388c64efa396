"""The MIL op table of the NumPy evaluator: ``f(inputs, op) -> array`` per op type."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ....core.errors import MemloraError
from .dtypes import DTYPES as _DTYPES
from .dtypes import FIX_UNKNOWN as _FIX_UNKNOWN


# --- op implementations: f(inputs: dict[str, value], op) -> array ---------------------------------

def _float(x):
    """fp16 operands compute in float32 (the result is rounded back to the op's output dtype)."""
    return x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype == np.float16 else x


def _binary(fn):
    return lambda a, op: fn(_float(a["x"]), _float(a["y"]))


def _unary(fn):
    return lambda a, op: fn(_float(a["x"]))


def _eps(fn):
    return lambda a, op: fn(_float(a["x"]), float(a["epsilon"]))


def _axes(a, rank):
    axes = a.get("axes")
    return None if axes is None else tuple(int(i) % rank for i in np.atleast_1d(axes))


def _reduce(fn):
    def run(a, op):
        x = _float(a["x"])
        return fn(x, axis=_axes(a, x.ndim), keepdims=bool(a.get("keep_dims", False)))
    return run


def _slices(shape, a):
    rank = len(shape)
    begin = [int(i) for i in np.atleast_1d(a["begin"])]
    end = [int(i) for i in np.atleast_1d(a["end"])]
    stride = [int(i) for i in np.atleast_1d(a["stride"])] if a.get("stride") is not None else [1] * rank
    bm = np.atleast_1d(a["begin_mask"]) if a.get("begin_mask") is not None else [False] * rank
    em = np.atleast_1d(a["end_mask"]) if a.get("end_mask") is not None else [False] * rank
    sm = np.atleast_1d(a["squeeze_mask"]) if a.get("squeeze_mask") is not None else [False] * rank
    out = []
    for i in range(rank):
        if sm[i]:
            out.append(begin[i] % shape[i])  # an integer index drops the axis
        else:
            out.append(slice(None if bm[i] else begin[i], None if em[i] else end[i], stride[i]))
    return tuple(out)


def _slice_by_index(a, op):
    return a["x"][_slices(a["x"].shape, a)]


def _slice_update(a, op):
    x = a["x"].copy()
    idx = _slices(x.shape, a)
    x[idx] = a["update"].reshape(x[idx].shape)
    return x


def _slice_by_size(a, op):
    x = a["x"]
    begin = [int(i) for i in a["begin"]]
    size = [int(s) for s in a["size"]]
    return x[tuple(slice(b, None if s == -1 else b + s) for b, s in zip(begin, size))]


def _reshape(a, op):
    x, shape = a["x"], [int(s) for s in a["shape"]]
    if 0 in shape:  # each 0 copies the input dim aligned from the right
        r = x.ndim
        shape = [(x.shape[r - (len(shape) - i)] if r - (len(shape) - i) >= 0 else 1) if s == 0 else s
                 for i, s in enumerate(shape)]
    return x.reshape(shape)


def _gather(a, op):
    x, idx = a["x"], a["indices"].astype(np.int64)
    axis, batch = int(a.get("axis", 0)), int(a.get("batch_dims", 0))
    if batch:
        raise MemloraError(f"gather with batch_dims={batch} ({op.name}) is not implemented", fix=_FIX_UNKNOWN)
    axis %= x.ndim
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


def _gather_along_axis(a, op):
    x, idx = a["x"], a["indices"].astype(np.int64)
    axis = int(a.get("axis", 0)) % x.ndim
    return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


def _concat(a, op):
    values = [np.atleast_1d(v) for v in a["values"]]  # shape arithmetic may concat scalars
    axis = int(a["axis"])
    if a.get("interleave") is not None and bool(a["interleave"]):
        raise MemloraError(f"concat with interleave ({op.name}) is not implemented", fix=_FIX_UNKNOWN)
    dtype = np.result_type(*values)
    return np.concatenate([v.astype(dtype) for v in values], axis=axis)


def _split(a, op):
    x, axis = a["x"], int(a["axis"]) % a["x"].ndim
    if a.get("split_sizes") is not None:
        cuts = np.cumsum([int(s) for s in a["split_sizes"]])[:-1]
    else:
        n = int(a["num_splits"])
        cuts = [x.shape[axis] // n * i for i in range(1, n)]
    return tuple(np.split(x, cuts, axis=axis))


def _matmul(a, op):
    x, y = _float(a["x"]), _float(a["y"])
    if bool(a.get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(a.get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _linear(a, op):
    y = np.matmul(_float(a["x"]), _float(a["weight"]).T)
    return y + _float(a["bias"]) if a.get("bias") is not None else y


def _softmax(a, op):
    x = _float(a["x"])
    axis = int(a.get("axis", -1))
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


def _gelu(a, op):
    x, mode = _float(a["x"]), str(a.get("mode", "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    erf = np.vectorize(math.erf, otypes=[np.float64])
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _layer_norm(a, op):
    x = _float(a["x"])
    axes = _axes(a, x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(a["epsilon"]))
    if a.get("gamma") is not None:
        y = y * _float(a["gamma"])
    if a.get("beta") is not None:
        y = y + _float(a["beta"])
    return y


def _sdpa(a, op):
    q, k, v = _float(a["query"]), _float(a["key"]), _float(a["value"])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    mask = a.get("attn_mask")
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + _float(mask)
    return np.matmul(_softmax({"x": s, "axis": -1}, op), v)


def _cast(a, op):
    return a["x"].astype(_DTYPES[str(a["dtype"])])


def _range_1d(a, op):
    return np.arange(a["start"], a["end"], a["step"])


def _fill(a, op):
    return np.full([int(s) for s in a["shape"]], a["value"])


def _select(a, op):
    return np.where(a["cond"].astype(bool), _float(a["a"]), _float(a["b"]))


def _band_part(a, op):
    x = a["x"]
    lower, upper = int(a.get("lower", -1)), int(a.get("upper", -1))
    r, c = np.arange(x.shape[-2])[:, None], np.arange(x.shape[-1])[None]
    keep = np.ones((x.shape[-2], x.shape[-1]), bool)
    if lower >= 0:
        keep &= (r - c) <= lower
    if upper >= 0:
        keep &= (c - r) <= upper
    return np.where(keep, x, np.zeros_like(x))


OPS: dict[str, Callable] = {
    # elementwise binary (broadcasting)
    "add": _binary(np.add), "sub": _binary(np.subtract), "mul": _binary(np.multiply),
    "real_div": _binary(np.divide), "pow": _binary(np.power), "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum), "floor_div": _binary(np.floor_divide), "mod": _binary(np.mod),
    "equal": _binary(np.equal), "not_equal": _binary(np.not_equal), "less": _binary(np.less),
    "less_equal": _binary(np.less_equal), "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal), "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or), "logical_xor": _binary(np.logical_xor),
    # elementwise unary
    "cos": _unary(np.cos), "sin": _unary(np.sin), "exp": _unary(np.exp), "sqrt": _unary(np.sqrt),
    "tanh": _unary(np.tanh), "abs": _unary(np.abs), "floor": _unary(np.floor), "ceil": _unary(np.ceil),
    "round": _unary(np.round), "sign": _unary(np.sign), "square": _unary(np.square),
    "logical_not": _unary(np.logical_not), "relu": _unary(lambda x: np.maximum(x, 0)),
    "sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))), "silu": _unary(lambda x: x / (1 + np.exp(-x))),
    "rsqrt": _eps(lambda x, e: 1 / np.sqrt(x + e)), "inverse": _eps(lambda x, e: 1 / (x + e)),
    "log": _eps(lambda x, e: np.log(x + e)),
    "clip": lambda a, op: np.clip(_float(a["x"]), float(a["alpha"]), float(a["beta"])),
    "gelu": _gelu, "softmax": _softmax, "layer_norm": _layer_norm,
    # reductions
    "reduce_mean": _reduce(np.mean), "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min), "reduce_prod": _reduce(np.prod),
    "reduce_argmax": lambda a, op: np.argmax(a["x"], axis=int(a["axis"])),
    # linear algebra
    "linear": _linear, "matmul": _matmul, "scaled_dot_product_attention": _sdpa,
    # shapes and indexing
    "shape": lambda a, op: np.asarray(a["x"].shape, np.int32),
    "reshape": _reshape, "transpose": lambda a, op: np.transpose(a["x"], [int(p) for p in a["perm"]]),
    "expand_dims": lambda a, op: np.expand_dims(a["x"], tuple(int(i) for i in a["axes"])),
    "squeeze": lambda a, op: np.squeeze(a["x"], _axes(a, a["x"].ndim)),
    "tile": lambda a, op: np.tile(a["x"], [int(r) for r in a["reps"]]),
    "concat": _concat, "split": _split, "slice_by_index": _slice_by_index, "slice_by_size": _slice_by_size,
    "slice_update": _slice_update, "gather": _gather, "gather_along_axis": _gather_along_axis,
    "select": _select, "cast": _cast, "fill": _fill, "range_1d": _range_1d, "band_part": _band_part,
    "identity": lambda a, op: a["x"],
}

from .conv import avg_pool, conv  # noqa: E402  (vision towers: patch embedding, projector pooling)

OPS.update(conv=conv, avg_pool=avg_pool)
