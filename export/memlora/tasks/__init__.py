"""Tasks: models wrapped for export (the what), kept apart from backends (the how).

A backend receives a task and lowers it. Today: the KV-cache text decoder. The vision encoder
and the embeddings-input decoder of MemLoRA-V are further task types with the same shape:
a torch module with named inputs/outputs plus the adapters that apply to it.
"""
from .decoder import DecoderTask, build_decoder_task

__all__ = ["DecoderTask", "build_decoder_task"]
