"""A small NumPy reference evaluator for Core ML's MIL programs, so numerics are checked off a Mac.

Core ML predicts only on macOS; conversion runs anywhere. This module runs the converted MIL
program itself (loaded back from the saved ``.mlpackage``, so it checks what ships: the graph,
the weight blob, compression ops and state updates), op by op in NumPy. It checks the
conversion, not Apple's kernels: fp16 ops compute in float32 and round their result to fp16,
which is one rounding per op, as the program's dtypes say.

Only the ops memlora's decoder graphs contain are implemented; any other op fails up front,
when the function is prepared, with a :class:`MemloraError` naming it.

Example::

    prog = load_program(Path("model.mlpackage"))
    fn = MilFunction(prog, "main")
    state = fn.new_state()
    out = fn.run({"input_ids": ids, ...}, state)
"""
from __future__ import annotations

from .function import MilFunction, load_program
from .ops import OPS

__all__ = ["MilFunction", "OPS", "load_program"]
