"""The few ``memlora`` modules outside this package it uses, imported in one place."""
from __future__ import annotations

from ..core.bundle import atomic_dir
from ..core.errors import MemloraError
from ..core.families import ATTN, MLP
from ..sources.model_io import ModelInfo, inspect_model_dir, quiet_transformers
from ..core.progress import steps as progress_steps

__all__ = ["ATTN", "atomic_dir", "MLP", "MemloraError", "ModelInfo", "inspect_model_dir", "progress_steps",
           "quiet_transformers"]
