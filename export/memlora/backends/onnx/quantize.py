"""ONNX quantization: MatMulNBits on the base weights and the LM head (untied from the table for
it), GatherBlockQuantized on the table with ``--onnx-quantize-table``, and the manifest's record
of the bits each got. LoRA inputs stay float."""
from __future__ import annotations

import numpy as np

from ...core.config import ExportSpec, Quant

# The 8-bit LM head's block. onnxruntime 1.32's 8-bit MatMulNBits kernel is per-block bound at
# 32: on qwen2.5-0.5b's head [896, 151936] it ran 12.4 / 6.6 ms at 1 / 2 threads, and 9.9 / 5.0 ms
# at 128 (64: no faster, 256: slower), for a max relative error of 0.0099 against 0.0083 (int4
# blocks of 32: 0.094). The head is 14-20% of an int4 decode step, so this is 6% of the step.
HEAD8_BLOCK = 128


def quant_meta(spec: ExportSpec) -> dict:
    """The LM head's and the table's bits of a quantized export, and a ``variant`` label where
    they differ from the defaults (benchmarks name such an artifact ``onnx/external/int4+head4``)."""
    if spec.quant is Quant.NONE:
        return {}
    int4 = spec.quant is Quant.INT4
    head, head_block = _head_quant(spec)
    table = 4 if int4 and spec.onnx.quantize_table else None
    parts = ([f"head{head}"] if int4 and head != 8 else []) + (["table4"] if table else [])
    return dict(head_bits=head, head_block=head_block, table_bits=table, **({"variant": "+".join(parts)} if parts else {}))


def _head_quant(spec: ExportSpec) -> tuple[int, int]:
    """(bits, block) of a quantized export's LM head: ``--onnx-head-bits`` in an int4 export, 8 in
    an int8 one; an 8-bit head in blocks of :data:`HEAD8_BLOCK`, a 4-bit one in ``group_size``."""
    bits = spec.onnx.head_bits if spec.quant is Quant.INT4 else 8
    return bits, HEAD8_BLOCK if bits == 8 else spec.group_size


def untie_transposed_weights(model) -> list[str]:
    """Give every ``MatMul(x, Transpose(W))`` on a constant ``W`` its own pre-transposed weight.

    A tied LM head reaches the embedding table through a Transpose, which MatMulNBits never sees
    through (and onnxruntime folds into a second fp32 copy at load). Untied, the head quantizes as
    a MatMul and the table as a Gather. LoRA A/B (graph inputs) are left alone. Returns the names
    of the MatMul nodes it untied.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    inputs = {i.name for i in graph.input}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {o: n for n in graph.node for o in n.output}
    heads, drop = [], []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2:
            continue
        tr = producers.get(node.input[1])
        if tr is None or tr.op_type != "Transpose" or tr.input[0] not in inits or tr.input[0] in inputs:
            continue
        perm = next((list(a.ints) for a in tr.attribute if a.name == "perm"), [1, 0])
        weight = inits[tr.input[0]]
        if len(weight.dims) != 2 or perm != [1, 0]:
            continue
        name = f"{tr.input[0]}.untied_t"
        if name not in inits:
            arr = np.ascontiguousarray(numpy_helper.to_array(weight).T)
            inits[name] = numpy_helper.from_array(arr, name)
            graph.initializer.append(inits[name])
        node.input[1] = name
        consumers[tr.output[0]] -= 1
        if consumers[tr.output[0]] == 0:
            drop.append(tr)
        heads.append(node.name)
    for tr in drop:
        graph.node.remove(tr)
    return heads


def quantize_model(model, spec: ExportSpec):
    """``--quant`` on a float decoder graph: MatMulNBits on the base weights, the LM head at
    ``_head_quant`` bits and block, the table too with ``--onnx-quantize-table``; returns the model."""
    import logging

    root_level = logging.getLogger().level
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer module turns the root logger to INFO on import and logs every node.
    logging.getLogger().setLevel(root_level)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)

    bits = 8 if spec.quant is Quant.INT8 else 4
    heads = untie_transposed_weights(model)  # the LM head quantizes too, not only the layers

    def nbits(model, bits, ops, include=None, exclude=None, block=spec.group_size):
        # accuracy_level=4 (int8 compute): without it 8-bit decode ran 12x slower than fp32 here.
        q = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                 accuracy_level=4, op_types_to_quantize=ops, nodes_to_include=include,
                                 nodes_to_exclude=exclude, quant_axes=(("MatMul", 0), ("Gather", 1)))
        q.process()
        return q.model.model

    # LoRA weights are graph inputs that an adapter overrides; their zero-rank defaults are
    # initializers the quantizer would otherwise take for weights (and drop the inputs).
    inputs = {i.name for i in model.graph.input}
    lora = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inputs]
    model = nbits(model, bits, ("MatMul",), exclude=heads + lora)
    if heads:  # by default the head at 8 bits, as llama.cpp's q4_0 keeps its output tensor at q6_K
        # (a 4-bit head moved top-1 on near ties); --onnx-head-bits 4: int4 all the way.
        head_bits, block = _head_quant(spec)
        # (nodes_to_include adds to the op types, it does not restrict them: exclude LoRA again)
        model = nbits(model, head_bits, ("MatMul",), include=heads, exclude=lora, block=block)
    if bits == 4 and spec.onnx.quantize_table:  # the table as GatherBlockQuantized (int4 only in onnxruntime): one row a token
        model = nbits(model, 4, ("Gather",))
    return model
