"""Graph rewrites after the dynamo export: fewer, larger ops for onnxruntime's CPU decode step.

The exporter writes each RMSNorm as seven elementwise ops (``Pow, ReduceMean, Add, Sqrt,
Reciprocal, Mul, Mul``). A decode step of a 0.5B model runs ~49 of them, each a kernel launch
and a pass over the hidden state; onnxruntime's own fusion does not match this form (it looks
for ``Div``). :func:`fuse_rms_norms` replaces each with one ``SimplifiedLayerNormalization``
(an onnxruntime op in the default domain, in every CPU build including the mobile packages and
ONNX Runtime GenAI). onnxruntime 1.32 does not fuse it further with the residual ``Add`` before
it at session load (checked on the optimized graph of tiny-qwen2): the ``Add`` stays its own op.
"""
from __future__ import annotations

import numpy as np


class _Graph:
    """Look-ups over one graph: producers, consumer counts, constant values."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        for out in graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1
        self.inputs = {i.name for i in graph.input}
        self.consts = {i.name: i for i in graph.initializer if i.name not in self.inputs}
        self._to_array = numpy_helper.to_array

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or ``Constant`` output, else None."""
        if name in self.consts:
            return self._to_array(self.consts[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return self._to_array(attr.t)
        return None

    def only_use(self, name: str) -> bool:
        """``name`` is read by exactly one node and is not a graph output."""
        return self.consumers.get(name, 0) == 1

    def make(self, name: str, op: str):
        """The node producing ``name`` if it is an ``op`` (else None)."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op else None


def _other(node, name: str) -> str | None:
    """The other input of a two-input node, given one of them."""
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1] if ins[0] == name else ins[0]


def _match_rms(g: _Graph, final) -> tuple[str, str, float, list] | None:
    """``Mul(weight, Mul(x, Reciprocal(Sqrt(Add(ReduceMean(Pow(x, 2)), eps)))))`` ending at
    ``final`` -> (x, weight, eps, the matched nodes), or None."""
    for inner_name in final.input:
        weight = _other(final, inner_name)
        inner = g.make(inner_name, "Mul")
        w = g.const(weight) if weight else None
        if inner is None or w is None or w.ndim != 1 or not g.only_use(inner_name):
            continue
        for rsqrt_name in inner.input:
            x = _other(inner, rsqrt_name)
            rec = g.make(rsqrt_name, "Reciprocal")
            sqrt = rec and g.only_use(rsqrt_name) and g.make(rec.input[0], "Sqrt")
            add = sqrt and g.only_use(rec.input[0]) and g.make(sqrt.input[0], "Add")
            if not add or not g.only_use(sqrt.input[0]):
                continue
            mean = next((g.make(i, "ReduceMean") for i in add.input if g.make(i, "ReduceMean")), None)
            eps = g.const(_other(add, mean.output[0])) if mean is not None else None
            if eps is None or eps.size != 1 or not g.only_use(mean.output[0]) or not _last_axis(g, mean):
                continue
            pow_ = g.make(mean.input[0], "Pow")
            two = g.const(pow_.input[1]) if pow_ is not None else None
            if two is None or two.size != 1 or float(two) != 2.0 or pow_.input[0] != x or not g.only_use(pow_.output[0]):
                continue
            return x, weight, float(eps), [pow_, mean, add, sqrt, rec, inner, final]
    return None


def _last_axis(g: _Graph, mean) -> bool:
    """ReduceMean over the last axis only, keeping it (axes as input, opset 18, or attribute)."""
    keep = next((a.i for a in mean.attribute if a.name == "keepdims"), 1)
    axes = g.const(mean.input[1]) if len(mean.input) > 1 and mean.input[1] else None
    if axes is None:
        axes = next((np.array(a.ints) for a in mean.attribute if a.name == "axes"), None)
    return keep == 1 and axes is not None and axes.size == 1 and int(axes.reshape(-1)[0]) == -1


def fuse_rms_norms(model) -> int:
    """Replace every matched RMSNorm chain with ``SimplifiedLayerNormalization`` (in place, same
    output name, fp32 statistics). Returns how many were fused."""
    from onnx import helper

    g = _Graph(model.graph)
    drop, norms = set(), {}
    for node in model.graph.node:
        match = _match_rms(g, node) if node.op_type == "Mul" and id(node) not in drop else None
        if match is None or any(id(n) in drop for n in match[3]):
            continue
        x, weight, eps, nodes = match
        # Takes the place of the chain's last Mul: x and weight are defined before it.
        norms[id(node)] = helper.make_node("SimplifiedLayerNormalization", [x, weight], [node.output[0]],
                                           name=f"{node.name}_rms", axis=-1, epsilon=eps, stash_type=1)
        drop.update(id(n) for n in nodes)
    keep = [norms.get(id(n), n) for n in model.graph.node if id(n) not in drop or id(n) in norms]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(norms)


def fuse_skip_norms(model) -> int:
    """``SimplifiedLayerNormalization(Add(a, b))`` -> one ``SkipSimplifiedLayerNormalization(a, b)``
    (com.microsoft) that also returns the sum, under the Add's name (the residual stream the next
    block adds to). Both addends must be activations (not constants). Returns how many."""
    from onnx import helper

    graph = model.graph
    g = _Graph(graph)
    fused, drop = {}, set()
    for node in graph.node:
        add = g.make(node.input[0], "Add") if node.op_type == "SimplifiedLayerNormalization" else None
        if add is None or len(add.input) != 2 or any(g.const(i) is not None for i in add.input) or id(add) in fused:
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        # In the Add's place: its inputs exist there, and readers of the sum may come before the norm.
        fused[id(add)] = helper.make_node(
            "SkipSimplifiedLayerNormalization", [add.input[0], add.input[1], node.input[1]],
            [node.output[0], "", "", add.output[0]], name=f"{node.name}_skip", domain="com.microsoft", epsilon=eps)
        drop.add(id(node))
    if not fused:
        return 0
    nodes = [fused.get(id(n), n) for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)
    _com_microsoft(model)
    return len(fused)


def fuse_matmul_bias(model) -> int:
    """``Add(MatMulNBits(x), bias)`` with a constant 1-D bias -> the MatMulNBits' own ``bias``
    input (Qwen's q/k/v bias): one op less a layer. Returns how many."""
    graph = model.graph
    g = _Graph(graph)
    drop = set()
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        for name in node.input:
            mm, bias = g.make(name, "MatMulNBits"), _other(node, name)
            value = g.const(bias) if bias else None
            if mm is None or value is None or value.ndim != 1 or len(mm.input) > 5 or not g.only_use(name):
                continue
            mm.input.extend([""] * (5 - len(mm.input)) + [bias])
            mm.output[0] = node.output[0]
            drop.add(id(node))
            break
    nodes = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(nodes)
    return len(drop)


def _com_microsoft(model) -> None:
    from onnx import helper

    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
