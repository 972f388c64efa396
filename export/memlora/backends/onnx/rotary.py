"""Rotary position embedding as one onnxruntime ``RotaryEmbedding`` op per query / key.

The exporter writes ``q * cos + rotate_half(q) * sin`` as seven ops (``Mul, Slice, Slice, Neg,
Concat, Mul, Add``), twice per layer, each a kernel launch on a decode step. onnxruntime's
``com.microsoft.RotaryEmbedding`` (non-interleaved, ``[b, heads, s, head_dim]`` input, in every
CPU build and ONNX Runtime GenAI) does the same from ``position_ids`` and a cos / sin table.

The tables are not re-derived from the model's rope settings: they are the graph's own ``cos`` /
``sin`` subgraph evaluated at positions ``0 .. max_positions-1``, so any rope scaling the export
computed is in them as it was. A cos / sin that depends on anything but ``position_ids``, or
whose two halves differ (not ``cat(freqs, freqs)``), is left alone.
"""
from __future__ import annotations

import numpy as np

from .fusions import _Graph, _other

MS_DOMAIN = "com.microsoft"


def _slice_bounds(g: _Graph, node) -> tuple[int, int] | None:
    """(start, end) of a constant last-axis Slice with step 1, else None."""
    if node is None or node.op_type != "Slice" or len(node.input) < 4:
        return None
    vals = [g.const(n) if n else None for n in node.input[1:]]
    if any(v is None or v.size != 1 for v in vals[:3]) or (len(vals) > 3 and vals[3] is not None and int(vals[3].reshape(-1)[0]) != 1):
        return None
    start, end, axis = (int(v.reshape(-1)[0]) for v in vals[:3])
    return (start, end) if axis in (-1, 3) else None


def _match(g: _Graph, add) -> tuple[str, str, str, int, list] | None:
    """``Add(Mul(x, C), Mul(Concat(Neg(Slice(x, h:)), Slice(x, :h)), S))`` -> (x, cos, sin, h, nodes)
    where C / S are ``Unsqueeze(cos / sin, [1])``."""
    for left_name in add.input:
        left, right = g.make(left_name, "Mul"), g.make(_other(add, left_name) or "", "Mul")
        if left is None or right is None or not (g.only_use(left.output[0]) and g.only_use(right.output[0])):
            continue
        for cat_name in right.input:
            cat = g.make(cat_name, "Concat")
            if cat is None or len(cat.input) != 2 or not g.only_use(cat_name):
                continue
            neg, low = g.make(cat.input[0], "Neg"), g.producer.get(cat.input[1])
            high = g.producer.get(neg.input[0]) if neg is not None else None
            lo, hi = _slice_bounds(g, low), _slice_bounds(g, high)
            if lo is None or hi is None or low.input[0] != high.input[0] or lo[0] != 0 or hi[0] != lo[1]:
                continue
            x = low.input[0]
            if x not in left.input or not all(g.only_use(n) for n in (cat.input[0], cat.input[1], neg.input[0])):
                continue
            cos_u, sin_u = _other(left, x), _other(right, cat_name)
            cos, sin = _unsqueezed(g, cos_u), _unsqueezed(g, sin_u)
            if cos and sin:
                return x, cos, sin, lo[1], [left, right, cat, neg, low, high, add]
    return None


def _unsqueezed(g: _Graph, name: str | None) -> str | None:
    """``t`` for ``Unsqueeze(t, [1])`` (the heads axis), else None."""
    node = g.make(name or "", "Unsqueeze")
    axes = g.const(node.input[1]) if node is not None and len(node.input) > 1 else None
    return node.input[0] if axes is not None and axes.size == 1 and int(axes.reshape(-1)[0]) == 1 else None


def _tables(model, g: _Graph, cos: str, sin: str, max_positions: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The graph's own cos / sin at positions 0..max_positions-1, as ``[max_positions, d/2]``."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    needed, stack, seen = [], [cos, sin], set()
    while stack:  # every node cos and sin depend on
        name = stack.pop()
        node = g.producer.get(name)
        if node is None:
            if name not in g.consts and name != "position_ids":
                return None  # depends on another graph input
            continue
        if id(node) not in seen:
            seen.add(id(node))
            needed.append(node)
            stack.extend(i for i in node.input if i)
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    needed.sort(key=lambda n: order[id(n)])
    used = {i for n in needed for i in n.input}
    # position_ids of any length (the graph's own may be fixed); one row, as the decoder takes it.
    inputs = [helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "positions"])]
    graph = helper.make_graph(needed, "rope", inputs, [helper.make_empty_tensor_value_info(n) for n in (cos, sin)],
                              [t for t in model.graph.initializer if t.name in used])
    sub = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    pos = np.arange(max_positions, dtype=np.int64)[None]
    try:
        c, s = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"position_ids": pos})
    except Exception:  # onnxruntime raises several types; a subgraph it cannot run is not fused
        return None
    if c.ndim != 3 or c.shape[1] != max_positions or c.shape[-1] % 2:
        return None
    half = c.shape[-1] // 2
    if not (np.array_equal(c[..., :half], c[..., half:]) and np.array_equal(s[..., :half], s[..., half:])):
        return None
    return np.ascontiguousarray(c[0, :, :half]), np.ascontiguousarray(s[0, :, :half])


def fuse_rotary(model, max_positions: int) -> int:
    """Replace every matched rotary application with ``com.microsoft.RotaryEmbedding`` (in place,
    same output names); drop what no longer feeds anything. Returns how many were fused."""
    from onnx import helper, numpy_helper

    if not any(i.name == "position_ids" for i in model.graph.input):
        return 0
    g = _Graph(model.graph)
    tables: dict[tuple[str, str], tuple[str, str] | None] = {}
    widths: dict[tuple[str, str], int | None] = {}
    drop, fused = set(), {}
    for node in model.graph.node:
        match = _match(g, node) if node.op_type == "Add" else None
        if match is None:
            continue
        x, cos, sin, half, nodes = match
        if (cos, sin) not in tables:
            found = _tables(model, g, cos, sin, max_positions)
            names = (f"{cos}.rope_cache", f"{sin}.rope_cache") if found else None
            if found:
                model.graph.initializer.extend(numpy_helper.from_array(t, n) for t, n in zip(found, names))
            tables[(cos, sin)] = names
            widths[(cos, sin)] = found[0].shape[-1] if found else None
        if tables[(cos, sin)] is None or widths[(cos, sin)] != half:  # a partial rotary: not this op's
            continue
        fused[id(node)] = helper.make_node("RotaryEmbedding", [x, "position_ids", *tables[(cos, sin)]], [node.output[0]],
                                           name=f"{node.name}_rope", domain=MS_DOMAIN, interleaved=0)
        drop.update(id(n) for n in nodes)
    if not fused:
        return 0
    keep = [fused.get(id(n), n) for n in model.graph.node if id(n) not in drop or id(n) in fused]
    del model.graph.node[:]
    model.graph.node.extend(_live(model.graph, keep))
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return len(fused)


def _live(graph, nodes: list) -> list:
    """``nodes`` without those whose outputs nothing reads (the now unused cos / sin chains)."""
    wanted = {o.name for o in graph.output}
    live = []
    for node in reversed(nodes):
        if any(o in wanted for o in node.output):
            live.append(node)
            wanted.update(i for i in node.input if i)
    return live[::-1]
