"""The rotary embedding as one onnxruntime ``RotaryEmbedding`` per query and key (com.microsoft).

The dynamo exporter writes HF's ``q * cos + rotate_half(q) * sin`` as seven ops per tensor
(``Mul, Slice, Slice, Neg, Concat, Mul, Add``), fourteen a layer, plus the cos/sin computation.
:func:`fuse_rotary` replaces each match with one ``RotaryEmbedding`` (non-interleaved, on the
``[b, heads, s, d]`` tensor, rows gathered by the graph's own ``position_ids``) that reads cos/sin
tables of ``max_positions`` rows. The tables are not recomputed from a config: the graph's own
cos/sin subgraph is run for positions ``0..max_positions-1`` (:func:`rotary_tables`), so scaled
and family-specific rotaries come out exactly as exported. A rotary whose halves differ
(interleaved, multimodal sections) or that needs more than ``position_ids`` is left alone.
Every onnxruntime build with contrib ops has the op (Python wheel, Android AAR, iOS pod).
"""
from __future__ import annotations

import numpy as np

from .fusions import _com_microsoft, _Graph, _other

_PREFIX = "memlora_rotary"


def _int_attr(node, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _perm(node) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def fuse_rotary(model, head_dim: int, max_positions: int) -> int:
    """Replace every matched rotary on a ``[b, heads, s, d]`` tensor (:func:`_heads_first`) with
    ``RotaryEmbedding``; same output names. Returns how many were fused."""
    from onnx import helper, numpy_helper

    graph = model.graph
    g = _Graph(graph)
    found = {}
    for node in graph.node:
        match = rotary_match(g, node.output[0], head_dim) if node.op_type == "Add" else None
        if match and _heads_first(g, match[0]):
            found[id(node)] = (node, match)
    tables = rotary_tables(model, {m[1:] for _, m in found.values()}, head_dim, max_positions) if found else {}
    names = {}
    for j, (pair, (cos, sin)) in enumerate(sorted(tables.items())):
        names[pair] = (f"{_PREFIX}.cos{j}", f"{_PREFIX}.sin{j}")
        graph.initializer.extend([numpy_helper.from_array(cos, names[pair][0]), numpy_helper.from_array(sin, names[pair][1])])
    fused = {}
    for key, (node, (x, cos, sin)) in found.items():
        if (cos, sin) in names:
            fused[key] = helper.make_node("RotaryEmbedding", [x, "position_ids", *names[(cos, sin)]], [node.output[0]],
                                          name=f"{node.name}_rotary", domain="com.microsoft", interleaved=0)
    if not fused:
        return 0
    replace_nodes(model, [fused.get(id(n), n) for n in graph.node])
    return len(fused)


def replace_nodes(model, nodes: list) -> None:
    """Make ``nodes`` the graph's, drop what no output reads any more, and declare com.microsoft."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    sweep(model.graph)
    _com_microsoft(model)


def _heads_first(g: _Graph, name: str) -> bool:
    """``name`` is ``[b, heads, s, d]``: a ``Transpose[0, 2, 1, 3]``, possibly through RMSNorms over
    the last axis (Gemma 3 normalizes q and k after the transpose)."""
    node = g.producer.get(name)
    while node is not None and node.op_type == "SimplifiedLayerNormalization":
        node = g.producer.get(node.input[0])
    return node is not None and node.op_type == "Transpose" and _perm(node) == [0, 2, 1, 3]


def sweep(graph) -> None:
    """Drop nodes no graph output depends on, and the initializers and value infos they left."""
    need = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in need for o in node.output):
            keep.append(node)
            need.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inputs = {i.name for i in graph.input}
    # In place, by index: re-adding the kept weights would copy every tensor of the model.
    for field, keep_it in ((graph.initializer, lambda i: i.name in need or i.name in inputs),
                           (graph.value_info, lambda v: v.name in need)):
        for k in reversed(range(len(field))):
            if not keep_it(field[k]):
                del field[k]


def rotary_match(g: _Graph, name: str, head_dim: int) -> tuple[str, str, str] | None:
    """``x * cos + cat(-x[..., d/2:], x[..., :d/2]) * sin`` ending at ``name`` -> (x, cos, sin)."""
    add = g.make(name, "Add")
    if add is None:
        return None
    half = head_dim // 2
    for a_name, b_name in (tuple(add.input), tuple(reversed(add.input))):
        mul_a, mul_b = g.make(a_name, "Mul"), g.make(b_name, "Mul")
        if mul_a is None or mul_b is None:
            continue
        for cat_name in mul_b.input:
            cat = g.make(cat_name, "Concat")
            if cat is None or len(cat.input) != 2 or _int_attr(cat, "axis", 0) not in (-1, 3):
                continue
            neg = g.make(cat.input[0], "Neg")
            second = neg and g.make(neg.input[0], "Slice")
            first = g.make(cat.input[1], "Slice")
            if not second or first is None or first.input[0] != second.input[0]:
                continue
            x = first.input[0]
            if not (_slice_is(g, first, 0, half) and _slice_is(g, second, half, head_dim, open_end=True)):
                continue
            if x not in mul_a.input:
                continue
            return x, _other(mul_a, x), _other(mul_b, cat_name)
    return None


def _slice_is(g: _Graph, node, start: int, end: int, open_end: bool = False) -> bool:
    """A Slice over the last axis from ``start`` to ``end`` (``open_end``: to ``end`` or past it), step 1."""
    vals = [g.const(n) if i < len(node.input) and n else None for i, n in enumerate(node.input[1:5], 1)]
    starts, ends, axes = vals[0], vals[1], vals[2]
    steps = vals[3] if len(vals) > 3 else None
    if starts is None or ends is None or axes is None or starts.size != 1:
        return False
    if int(axes.reshape(-1)[0]) not in (-1, 3) or (steps is not None and int(steps.reshape(-1)[0]) != 1):
        return False
    stop = int(ends.reshape(-1)[0])
    return int(starts.reshape(-1)[0]) == start and (stop >= end if open_end else stop == end)




def rotary_tables(model, pairs: set, head_dim: int, max_positions: int) -> dict:
    """(cos, sin) tensor names -> their ``[max_positions, d / 2]`` tables, evaluated by running the
    graph's own subgraph for positions 0..max_positions-1; pairs that need more than
    ``position_ids``, or whose halves differ (an interleaved or multimodal rotary), are left out."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    half, positions = head_dim // 2, np.arange(max_positions, dtype=np.int64)[None]
    tables = {}
    for cos, sin in sorted(pairs):
        nodes, need, seen, stack = [], set(), set(), [cos, sin]
        while stack:
            name = stack.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in producer:
                nodes.append(producer[name])
                stack.extend(producer[name].input)
            elif name in inits and name not in inputs:
                need.add(name)
            elif name != "position_ids":
                break
        else:
            order = {id(n): i for i, n in enumerate(graph.node)}
            nodes = sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)])
            sub = helper.make_graph(nodes, "rotary", [helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, None])],
                                    [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (cos, sin)],
                                    [inits[n] for n in sorted(need)])
            sub_model = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
            session = ort.InferenceSession(sub_model.SerializeToString(), providers=["CPUExecutionProvider"])
            c, s = (np.asarray(a, np.float32) for a in session.run([cos, sin], {"position_ids": positions}))
            if c.size == s.size == max_positions * head_dim:
                c, s = c.reshape(-1, head_dim), s.reshape(-1, head_dim)
                if np.array_equal(c[:, :half], c[:, half:]) and np.array_equal(s[:, :half], s[:, half:]):
                    tables[(cos, sin)] = (np.ascontiguousarray(c[:, :half]), np.ascontiguousarray(s[:, :half]))
    return tables
