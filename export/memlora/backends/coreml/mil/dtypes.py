"""MIL dtype names -> NumPy, and the fix for anything the evaluator does not know."""
from __future__ import annotations

import numpy as np

FIX_UNKNOWN = ("add the op to memlora.backends.coreml.mil.ops.OPS (see coremltools/converters/mil/mil/ops/defs), "
                "or check this export on a Mac where coremltools predicts")

DTYPES = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int32": np.int32, "int64": np.int64,
           "int16": np.int16, "int8": np.int8, "uint8": np.uint8, "uint16": np.uint16, "bool": np.bool_,
           "int4": np.int8, "uint4": np.uint8}


