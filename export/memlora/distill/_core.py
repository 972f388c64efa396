"""The few flat ``memlora`` modules this package uses, imported in one place.

The package is being restructured (flat modules move into folders); if one moves, this is the
only file of ``memlora.distill`` to change.
"""
from __future__ import annotations

from ..bundle import atomic_dir
from ..errors import MemloraError
from ..families import ATTN, MLP
from ..model_io import ModelInfo, inspect_model_dir, quiet_transformers
from ..progress import steps as progress_steps

__all__ = ["ATTN", "atomic_dir", "MLP", "MemloraError", "ModelInfo", "inspect_model_dir", "progress_steps",
           "quiet_transformers"]
