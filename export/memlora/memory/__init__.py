"""The backend-independent MemLoRA memory loop: chat formats, prompts, parsing, store, engine.

Nothing here depends on a particular runtime: a loop drives any
:class:`memlora.backends.base.Runner`.
"""
from .chat import CHAT_FORMATS, ChatFormat, render_chat, stop_strings, strip_special_tokens
from .engine import GenerationResult, GenerationSettings, generate
from .loop import Answer, IngestResult, LoopSettings, MemoryLoop, OpStats
from .parsing import Event, ExtractResult, IdMap, UpdateOp, UpdateResult, parse_extract, parse_update
from .prompts import DialogTurn, Op, Templates, load_templates, write_templates
from .store import AppliedOp, Memory, MemoryStore, SearchHit

__all__ = [
    "CHAT_FORMATS", "ChatFormat", "render_chat", "stop_strings", "strip_special_tokens",
    "GenerationResult", "GenerationSettings", "generate",
    "Answer", "IngestResult", "LoopSettings", "MemoryLoop", "OpStats",
    "Event", "ExtractResult", "IdMap", "UpdateOp", "UpdateResult", "parse_extract", "parse_update",
    "DialogTurn", "Op", "Templates", "load_templates", "write_templates",
    "AppliedOp", "Memory", "MemoryStore", "SearchHit",
]
