"""Read a Core ML package's interface (functions, inputs, outputs, states) from its spec."""
from __future__ import annotations

from pathlib import Path


def _feature(f) -> dict:
    kind = f.type.WhichOneof("Type")
    out = {"name": f.name}
    arr = f.type.multiArrayType if kind == "multiArrayType" else None
    if kind == "stateType":
        arr = f.type.stateType.arrayType
        out["state"] = True
    if arr is not None:
        from coremltools.proto import FeatureTypes_pb2 as ft

        out["dtype"] = ft.ArrayFeatureType.ArrayDataType.Name(arr.dataType).lower()
        shape = list(arr.shape)
        if arr.WhichOneof("ShapeFlexibility") == "shapeRange":
            shape = [[r.lowerBound, r.upperBound] for r in arr.shapeRange.sizeRanges]
        out["shape"] = shape  # [lo, hi] per flexible dim
    return out


def describe_package(package: Path) -> dict:
    """``{function: {inputs, outputs, states}}`` of an ``.mlpackage``, or the reason it cannot be read."""
    try:
        import coremltools as ct
    except ImportError:
        return {"error": "coremltools not installed: interface not read"}
    spec = ct.utils.load_spec(str(package))
    desc = spec.description
    funcs = list(desc.functions) or [desc]
    out = {}
    for fn in funcs:
        name = getattr(fn, "name", "") or "main"
        out[name] = {"inputs": [_feature(f) for f in fn.input], "outputs": [_feature(f) for f in fn.output],
                     "states": [_feature(f) for f in fn.state]}
    if desc.defaultFunctionName:
        out["default_function"] = desc.defaultFunctionName
    return out
