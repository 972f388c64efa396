"""Each layer's attention as one ``GroupQueryAttention`` (onnxruntime's contrib op, com.microsoft).

The dynamo exporter writes a layer's attention as ~45 small ops: per query and key the rotary
embedding (``Mul, Slice, Slice, Neg, Concat, Mul, Add``), the head reshapes and transposes, the
cache ``Concat``\\ s, and the scores, mask, softmax and value matmuls. Each costs a kernel launch;
at two threads the 0.5B int4 decode step spent ~12% of its time outside the matmuls, on one
thread. ``GroupQueryAttention`` does all of it in one kernel (rotary from a cos/sin table, cache
append, causal attention over grouped heads) and is what ONNX Runtime GenAI's own model builder
emits for CPU and mobile; it is in every onnxruntime build with contrib ops (the Python wheel,
the Android AAR, the iOS pod).

The match is structural and conservative: a layer is fused only if its graph is exactly
rotary -> cache concat -> scaled scores -> additive mask -> softmax -> values, the layer has no
sliding window (``local_window_size`` is not used) and the rotary table evaluated from the graph's
own cos/sin subgraph has the non-interleaved layout. Soft-capped scores (Gemma 2), sliding-window
layers and multimodal rotary stay as exported. The cos/sin tables hold ``max_positions`` rows:
positions past them are refused by the runner (``rotary_positions`` in the artifact meta).

Opt-in (``--onnx-gqa``), measured on this CPU at qwen2.5-0.5b int4, two threads: +9% decode at 64
cached tokens, level at 512, -12% at 1,024. onnxruntime 1.32's CPU kernel runs one GEMM per
*query* head with the keys transposed (MLAS packs them each time) and, without a shared
past/present buffer, copies the past cache into the present once per query head; the exported
grouped attention reads each kv head once. The memory loop decodes after 1.5k-token prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fusions import _Graph, _other
from .rotary import _int_attr, _perm, replace_nodes, rotary_match, rotary_tables

_GQA_PREFIX = "memlora_gqa"


@dataclass(frozen=True)
class AttentionShape:
    """What the fusion needs from the model: head counts, the layers without a sliding window,
    and how many positions the rotary tables cover."""

    heads: int
    kv_heads: int
    head_dim: int
    full_layers: frozenset[int]
    max_positions: int


def attention_shape(task, max_positions: int) -> AttentionShape:
    """The :class:`AttentionShape` of a decoder task (its ``text_config``)."""
    c = task.text_config
    types = getattr(c, "layer_types", None)
    if types:
        full = {i for i, t in enumerate(types) if t == "full_attention"}
    else:  # no per-layer types: only a model without a sliding window is fully causal
        full = set(range(task.num_layers)) if not getattr(c, "sliding_window", None) else set()
    return AttentionShape(c.num_attention_heads, task.kv_heads, task.head_dim, frozenset(full), max_positions)


@dataclass
class _Layer:
    q: str          # [b, s, heads, d] or [b, s, heads * d] before the rotary
    k: str
    v: str
    cos: str
    sin: str
    scale: float
    out: str        # the attention output [b, s, heads * d]
    drop: list      # nodes whose outputs the fused op now produces


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _head_input(g: _Graph, name: str, head_dim: int) -> str | None:
    """``Transpose[0, 2, 1, 3](X)``: X ([b, s, heads, d]), else None."""
    tr = g.make(name, "Transpose")
    return tr.input[0] if tr is not None and _perm(tr) == [0, 2, 1, 3] else None


def _match_layer(g: _Graph, cons: dict, layer: int, d: int) -> _Layer | None:
    """Layer ``layer``'s attention, from its cache concats to the output reshape, or None."""
    kc, vc = g.make(f"present.{layer}.key", "Concat"), g.make(f"present.{layer}.value", "Concat")
    if kc is None or vc is None or list(kc.input)[:1] != [f"past.{layer}.key"] \
            or list(vc.input)[:1] != [f"past.{layer}.value"] or len(kc.input) != 2 or len(vc.input) != 2:
        return None
    v, rot_k = _head_input(g, vc.input[1], d), rotary_match(g, kc.input[1], d)
    k = rot_k and _head_input(g, rot_k[0], d)
    pv = next((n for n in cons.get(vc.output[0], []) if n.op_type == "MatMul" and n.input[1] == vc.output[0]), None)
    soft = pv and g.make(pv.input[0], "Softmax")
    masked = soft and _int_attr(soft, "axis", -1) in (-1, 3) and g.make(soft.input[0], "Add")
    if not (v and k and masked):
        return None
    for scaled in (g.make(i, "Mul") for i in masked.input):
        factor = next((i for i in (scaled.input if scaled else []) if g.const(i) is not None), None)
        scores = factor and g.make(_other(scaled, factor), "MatMul")
        if scores and g.const(factor).size == 1:
            break
    else:
        return None
    kt, qg = g.make(scores.input[1], "Transpose"), g.make(scores.input[0], "Reshape")
    if kt is None or kt.input[0] != kc.output[0] or _perm(kt) != [0, 1, 3, 2] or qg is None:
        return None
    rot_q = rotary_match(g, qg.input[0], d)
    q = rot_q and _head_input(g, rot_q[0], d)
    if not q or rot_q[1:] != rot_k[1:]:
        return None
    chain, name = [], pv.output[0]
    for op in ("Reshape", "Transpose", "Reshape"):
        nxt = cons.get(name, [])
        if len(nxt) != 1 or nxt[0].op_type != op or not g.only_use(name):
            return None
        chain.append(nxt[0])
        name = nxt[0].output[0]
    if _perm(chain[1]) != [0, 2, 1, 3]:
        return None
    return _Layer(q, k, v, rot_k[1], rot_k[2], float(g.const(factor).reshape(-1)[0]), name, [kc, vc, chain[-1]])


def fuse_group_query_attention(model, shape: AttentionShape) -> int:
    """Replace every matched layer's attention with one ``GroupQueryAttention`` (rotary inside,
    from tables of ``shape.max_positions`` rows; same output and present names) and drop what no
    output reads any more. Returns how many layers were fused."""
    from onnx import helper, numpy_helper

    graph = model.graph
    g, cons = _Graph(graph), _consumers(graph)
    layers = {i: m for i in sorted(shape.full_layers) if (m := _match_layer(g, cons, i, shape.head_dim))}
    pairs = {(m.cos, m.sin) for m in layers.values()}
    tables = rotary_tables(model, pairs, shape.head_dim, shape.max_positions) if layers else {}
    layers = {i: m for i, m in layers.items() if (m.cos, m.sin) in tables}
    if not layers:
        return 0
    names = {}
    for j, (pair, (cos, sin)) in enumerate(sorted(tables.items())):
        names[pair] = (f"{_GQA_PREFIX}.cos{j}", f"{_GQA_PREFIX}.sin{j}")
        graph.initializer.extend([numpy_helper.from_array(cos, names[pair][0]), numpy_helper.from_array(sin, names[pair][1])])
    seqlens, total, nodes = _lengths(f"past.{min(layers)}.key", graph)
    replace, drop = {}, set()
    for i, m in layers.items():
        flat = [_flat(g, x, shape.head_dim, f"{_GQA_PREFIX}.{i}.{r}", graph) for x, r in ((m.q, "q"), (m.k, "k"), (m.v, "v"))]
        gqa = helper.make_node(
            "GroupQueryAttention", [x for x, _ in flat] + [f"past.{i}.key", f"past.{i}.value", seqlens, total, *names[(m.cos, m.sin)]],
            [m.out, f"present.{i}.key", f"present.{i}.value"], name=f"{_GQA_PREFIX}.{i}", domain="com.microsoft",
            num_heads=shape.heads, kv_num_heads=shape.kv_heads, scale=m.scale, do_rotary=1, rotary_interleaved=0)
        replace[id(m.drop[-1])] = [n for _, n in flat if n is not None] + [gqa]
        drop.update(id(n) for n in m.drop)
    for node in graph.node:
        nodes.extend(replace.get(id(node), []) if id(node) in drop else [node])
    replace_nodes(model, nodes)
    return len(layers)


def _flat(g: _Graph, name: str, head_dim: int, new: str, graph):
    """``[b, s, heads * d]`` for a ``[b, s, heads, d]`` tensor: the Reshape's own input when it came
    from one (then no node), else a new ``Reshape(name, [0, 0, -1])``."""
    from onnx import helper, numpy_helper

    rs = g.make(name, "Reshape")
    dims = g.const(rs.input[1]) if rs is not None else None
    if dims is not None and dims.size == 4 and int(dims[-1]) == head_dim:
        return rs.input[0], None
    shape_name = f"{_GQA_PREFIX}.flat"
    if not any(i.name == shape_name for i in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), shape_name))
    return new, helper.make_node("Reshape", [name, shape_name], [new], name=new)


def _lengths(past: str, graph) -> tuple[str, str, list]:
    """Nodes computing GQA's ``seqlens_k`` ([batch] int32: cached + new - 1) and
    ``total_sequence_length`` (int32 scalar) from the shapes of ``past`` and ``input_ids``."""
    from onnx import TensorProto, helper, numpy_helper

    p = _GQA_PREFIX
    graph.initializer.extend([numpy_helper.from_array(np.array(1, np.int64), f"{p}.one"),
                              numpy_helper.from_array(np.array(2, np.int64), f"{p}.two")])
    nodes = [
        helper.make_node("Shape", ["input_ids"], [f"{p}.ids_shape"]),
        helper.make_node("Shape", [past], [f"{p}.past_shape"]),
        helper.make_node("Gather", [f"{p}.past_shape", f"{p}.two"], [f"{p}.cached"], axis=0),
        helper.make_node("Gather", [f"{p}.ids_shape", f"{p}.one"], [f"{p}.new"], axis=0),
        helper.make_node("Add", [f"{p}.cached", f"{p}.new"], [f"{p}.total64"]),
        helper.make_node("Cast", [f"{p}.total64"], [f"{p}.total"], to=TensorProto.INT32),
        helper.make_node("Sub", [f"{p}.total64", f"{p}.one"], [f"{p}.last64"]),
        helper.make_node("Cast", [f"{p}.last64"], [f"{p}.last"], to=TensorProto.INT32),
        helper.make_node("Shape", ["input_ids"], [f"{p}.batch"], start=0, end=1),
        helper.make_node("Expand", [f"{p}.last", f"{p}.batch"], [f"{p}.seqlens"]),
    ]
    for n in nodes:
        n.name = n.output[0]
    return f"{p}.seqlens", f"{p}.total", nodes
