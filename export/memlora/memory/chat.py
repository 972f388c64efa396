"""Chat formats: how a list of messages becomes one prompt string for a model family.

Formats are found by name in :data:`CHAT_FORMATS` (the core's family registry refers to them via
its ``chat_format`` field). Each format is a small frozen dataclass, not a Jinja template: the
three families memlora ships need nothing more, and a plain dataclass is easy to mirror on a phone.

Message contents are always passed through :func:`strip_special_tokens` first, so text from a
user or from the memory store can never open or close a turn by itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatFormat:
    """One model family's turn markup.

    ``turn`` is the text of a whole turn with ``{role}`` and ``{content}`` slots; ``generation``
    opens the assistant turn the model should complete; ``role_names`` renames roles (Gemma calls
    the assistant ``model``). Formats without a system role fold the system message into the first
    user turn, separated by a blank line.
    """

    name: str
    bos: str
    turn: str
    generation: str
    stop: tuple[str, ...]
    special_tokens: tuple[str, ...]
    system_role: bool = True
    role_names: Mapping[str, str] = field(default_factory=dict)

    def role(self, role: str) -> str:
        return self.role_names.get(role, role)


CHAT_FORMATS: dict[str, ChatFormat] = {
    "chatml": ChatFormat(
        name="chatml",
        bos="",
        turn="<|im_start|>{role}\n{content}<|im_end|>\n",
        generation="<|im_start|>assistant\n",
        stop=("<|im_end|>", "<|endoftext|>"),
        special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    ),
    "llama3": ChatFormat(
        name="llama3",
        bos="<|begin_of_text|>",
        turn="<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
        generation="<|start_header_id|>assistant<|end_header_id|>\n\n",
        stop=("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
        special_tokens=(
            "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>", "<|eom_id|>",
        ),
    ),
    "gemma": ChatFormat(
        name="gemma",
        bos="<bos>",
        turn="<start_of_turn>{role}\n{content}<end_of_turn>\n",
        generation="<start_of_turn>model\n",
        stop=("<end_of_turn>", "<eos>"),
        special_tokens=("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
        system_role=False,
        role_names={"assistant": "model"},
    ),
}

# Any ``<|name|>`` marker (ChatML, Llama 3, Phi, ...) plus every format's literal markers, so text
# is cleaned of all families' markers whichever format renders it.
_PIPE_MARKER = r"<\|[A-Za-z0-9_.:\-]{1,64}\|>"
_ALL_MARKERS = sorted({t for f in CHAT_FORMATS.values() for t in f.special_tokens}, key=len,
                      reverse=True)
_MARKER_RE = re.compile("|".join([_PIPE_MARKER] + [re.escape(t) for t in _ALL_MARKERS]))


def get_format(name: str) -> ChatFormat:
    """Return the chat format called ``name``; a ``KeyError`` lists the known names."""
    try:
        return CHAT_FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown chat format {name!r}; known: {sorted(CHAT_FORMATS)}") from None


def strip_special_tokens(text: str) -> str:
    """Remove every chat control marker from ``text`` (repeatedly, so removal cannot splice
    ``<|im_<|im_end|>start|>`` into a new marker)."""
    while True:
        cleaned = _MARKER_RE.sub("", text)
        if cleaned == text:
            return cleaned
        text = cleaned


def render_chat(format_name: str, messages: Sequence[Mapping[str, str]],
                add_generation_prompt: bool = True) -> str:
    """Render ``messages`` (dicts with ``role`` in system/user/assistant and ``content``).

    Contents are stripped of control markers. A system message must come first; formats without
    a system role prepend it to the first user message.
    """
    fmt = get_format(format_name)
    msgs = [(m["role"], strip_special_tokens(str(m["content"]))) for m in messages]
    for i, (role, _) in enumerate(msgs):
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        if role == "system" and i != 0:
            raise ValueError("a system message may only come first")
    if msgs and msgs[0][0] == "system" and not fmt.system_role:
        system = msgs.pop(0)[1]
        if msgs and msgs[0][0] == "user":
            msgs[0] = ("user", f"{system}\n\n{msgs[0][1]}")
        else:
            msgs.insert(0, ("user", system))
    parts = [fmt.bos]
    parts += [fmt.turn.format(role=fmt.role(role), content=content) for role, content in msgs]
    if add_generation_prompt:
        parts.append(fmt.generation)
    return "".join(parts)


def stop_strings(format_name: str) -> list[str]:
    """The end-of-turn markers that end an assistant reply in this format."""
    return list(get_format(format_name).stop)
