"""Bytes a decode step actually reads, for the roofline: decode tok/s <= read bandwidth / bytes.

Per decoded token a model reads the weights of every matmul in full (the LM head included: a
tied table is read in full *as the head*), ONE row of each embedding table (a gather), and the
KV cache up to the current position. Stored files overstate this wherever an embedding table
is only gathered (an untied table; ExecuTorch's fp32 ``nn.Embedding`` beside a quantized or
delegated head), so the table is taken out and one row put back:

- ONNX: the graph says it. An initializer read only as the data of ``Gather`` /
  ``GatherBlockQuantized`` (and its scales / zero points there) counts one row; every other
  initializer counts in full (a tied table that also feeds the head through a Transpose does).
- ExecuTorch: an int8 / int4 export gathers from an int8 copy of the table beside the quantized
  head (``table_quant`` in the artifact's meta: its bytes are taken out, one row put back);
  exports from before that kept an fp32 ``nn.Embedding`` (``vocab x hidden x 4`` taken out), as
  does an untied fp32 one. A tied fp32 export with the adapter kept external stores the table
  once (its foundation.ptd is the size of the ONNX base), read in full as the head: nothing is
  taken out. A fused fp32 ``.pte`` stores it twice, the head's copy in the XNNPACK blob beside
  the gathered ``nn.Embedding`` (2.52 GB against 1.98 at qwen2.5-0.5b, bench share 116%): a file
  a table's size above the model's own weights (:func:`weights_bytes`) has one copy taken out.
- PyTorch eager: the parameters (tied counted once), less the table when untied.

KV bytes are fp32 K and V of every layer at the mean decode position (prompt + tokens / 2).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

GATHERS = {"Gather", "GatherBlockQuantized"}


def model_shape(config: dict) -> dict:
    """The sizes the count needs, from a Hugging Face config.json."""
    h, heads = config["hidden_size"], config["num_attention_heads"]
    return dict(hidden=h, layers=config["num_hidden_layers"], vocab=config["vocab_size"], heads=heads,
                kv_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or h // heads, intermediate=config.get("intermediate_size"),
                tied=bool(config.get("tie_word_embeddings", True)))


def weights_bytes(shape: dict) -> int | None:
    """fp32 bytes of the model's matmul weights with each table stored once (norms and biases,
    under 0.1%, left out); None without the MLP width (a config that does not say it)."""
    if not shape.get("intermediate") or "heads" not in shape:
        return None
    h, hd = shape["hidden"], shape["head_dim"]
    layer = h * hd * 2 * (shape["heads"] + shape["kv_heads"]) + 3 * h * shape["intermediate"]
    tables = 1 if shape["tied"] else 2
    return 4 * (shape["layers"] * layer + tables * shape["vocab"] * h)


def kv_bytes(shape: dict, length: float, dtype_bytes: int = 4) -> int:
    """K and V of every layer for ``length`` positions."""
    return int(shape["layers"] * 2 * shape["kv_heads"] * shape["head_dim"] * length * dtype_bytes)


@lru_cache(maxsize=64)
def onnx_gathered(path: str) -> tuple[int, int]:
    """(bytes of initializers an ONNX graph only gathers from, bytes of one row of each)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    graphs, users = [model.graph], {}
    while graphs:
        g = graphs.pop()
        for node in g.node:
            for i, name in enumerate(node.input):
                users.setdefault(name, []).append((node.op_type, i))
            graphs += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    table, rows = 0, 0
    for init in model.graph.initializer:
        uses = users.get(init.name, [])
        if not uses or not all(op in GATHERS and i != 1 for op, i in uses) or not init.dims:
            continue  # read in full by something else (or index inputs)
        n = _init_bytes(init)
        table += n
        rows += n // max(1, init.dims[0])
    return table, rows


def _init_bytes(init) -> int:
    import numpy as np
    import onnx

    for kv in init.external_data:
        if kv.key == "length":
            return int(kv.value)
    if init.raw_data:
        return len(init.raw_data)
    count = int(np.prod(init.dims)) if init.dims else 1
    try:
        item = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    except Exception:  # noqa: BLE001 - an exotic dtype (int4 packed): assume a byte
        item = 1
    return count * item


def gathered(backend: str, root: Path | None, artifact: dict | None, adapter: str, shape: dict,
             weight_bytes: int) -> tuple[int, int, str]:
    """(table bytes stored but only gathered, the rows read of them, how it was found)."""
    table, row = shape["vocab"] * shape["hidden"] * 4, shape["hidden"] * 4
    if backend == "pytorch":
        return (0, row, "parameters; tied table read in full as the head") if shape["tied"] else \
            (table, row, "parameters less the untied table")
    if backend == "onnx" and root is not None:
        files = [rel for role, rel in artifact["files"].items() if rel.endswith(".onnx")
                 and (":" not in role or role.split(":", 1)[1] == adapter)]
        got = [onnx_gathered(str(Path(root) / rel)) for rel in files if (Path(root) / rel).is_file()]
        return sum(t for t, _ in got), sum(r for _, r in got) or row, "onnx graph: gather-only initializers"
    quantized = (artifact or {}).get("quant", "none") != "none"
    tq = ((artifact or {}).get("meta") or {}).get("table_quant") or {}
    if backend == "executorch" and tq.get("bytes"):  # int8 table beside the quantized head (table_quant.py)
        return tq["bytes"], tq["bytes"] // shape["vocab"], "int8 embedding table beside the quantized head"
    if backend == "executorch" and weight_bytes > table and (quantized or not shape["tied"]):
        return table, row, "fp32 embedding table beside the quantized / untied head"
    if backend == "executorch":
        single = weights_bytes(shape)
        if single is not None and weight_bytes >= single + table // 2:  # fused fp32: head blob + nn.Embedding
            return table, row, "fp32 tied table stored twice (the delegated head beside the gathered embedding)"
        return 0, row, "fp32 tied: one table copy (measured: foundation.ptd ~ ONNX base), read in full as the head"
    return 0, row, "files as stored"


def bytes_per_token(backend: str, root, artifact, adapter: str, shape: dict, weight_bytes: int,
                    context: float) -> dict:
    """The roofline's bytes for one decoded token at ``context`` positions, and their parts."""
    table, rows, method = gathered(backend, root, artifact, adapter, shape, weight_bytes)
    matmul = weight_bytes - table
    kv = kv_bytes(shape, context)
    return dict(bytes_per_token=matmul + rows + kv, matmul_bytes=matmul, table_row_bytes=rows, kv_bytes=kv,
                gathered_table_bytes=table, bytes_method=method)
