"""``memlora chat``: a terminal conversation with memory, over any runtime session.

Each line the user types is first stored (extract facts, reconcile them with the store) and then
answered from the user's memories; the reply streams token by token and the memories it was given
are listed under it. ``/memories`` lists what is stored, ``/help`` the commands, ``/quit`` (or end
of input) leaves. Input and output are plain callables, so tests drive it without a terminal.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

HELP = "commands: /memories (list what is stored), /help, /quit"


@dataclass
class ChatOptions:
    """How the chat behaves."""

    user: str = "user"
    raw_fallback: bool = False
    show_memories: int = 5
    max_new_tokens: int = 64


def format_memories(memories, limit: int | None = None) -> list[str]:
    """One line per memory: short id, timestamp, text."""
    shown = memories if limit is None else memories[:limit]
    lines = [f"  [{m.id[:8]}] {m.updated_at}: {m.text}" for m in shown]
    if limit is not None and len(memories) > limit:
        lines.append(f"  ... and {len(memories) - limit} more")
    return lines


def run_chat(session, store, options: ChatOptions, read: Callable[[str], str] = input,
             write: Callable[[str], None] = print, stream: Callable[[str], None] | None = None) -> int:
    """Run the chat until ``/quit`` or end of input; return the number of messages handled.

    ``read(prompt)`` returns one line (raising ``EOFError`` at the end); ``write(line)`` prints a
    line; ``stream(text)`` prints generated text without a newline (default: buffered in ``write``).
    """
    from .memory import GenerationSettings, LoopSettings
    from .memory.ingest import remember_and_answer

    gen = GenerationSettings(max_new_tokens=options.max_new_tokens, eos_ids=session.eos_ids)
    loop = session.loop(store, LoopSettings(extract=gen, update=gen, answer=gen))
    user = options.user
    write(f"memlora chat: {session.describe()}")
    write(f"store {store.path}: {store.count(user)} memories for {user!r}. {HELP}")
    handled = 0
    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            break
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            break
        if line == "/help":
            write(HELP)
            continue
        if line == "/memories":
            memories = store.list(user)
            write(f"{len(memories)} memories for {user!r}:")
            for text in format_memories(memories):
                write(text)
            continue
        if line.startswith("/"):
            write(f"unknown command {line.split()[0]!r}; {HELP}")
            continue
        if stream is not None:
            loop.on_token = lambda _tok, piece: stream(piece)
            stream("assistant> ")
        result, answer = remember_and_answer(loop, line, user, raw_fallback=options.raw_fallback)
        if stream is not None:
            stream("\n")
        else:
            write(f"assistant> {answer.text}")
        handled += 1
        for op in result.applied:
            write(f"  stored {op.event.value}: {op.new_text or op.old_text}")
        if not result.applied:
            write("  (nothing new stored)")
        write(f"  memories used: {len(answer.memories)}")
        for text in format_memories(answer.memories, options.show_memories):
            write(text)
    return handled


def quiet_loop_logs():
    """Silence the loop's per-call parse warnings (a CLI counts them instead); returns a function
    that restores the level, so an in-process caller (tests) gets its logging back."""
    logger = logging.getLogger("memlora.memory.loop")  # engine warnings (a truncated prompt) still show
    old = logger.level
    logger.setLevel(logging.ERROR)
    return lambda: logger.setLevel(old)
