"""Prompt templates for the three memory operations (Mem0 v1 formats), and their rendering.

Templates are data: ``templates/{extract,update,answer}.txt`` ship in the package, are copied
into an export bundle by :func:`write_templates`, and a runtime loads them back with
:func:`load_templates`. A template file holds an optional ``=== system ===`` section and a
``=== user ===`` section; ``{{name}}`` slots are filled in one pass, so a value can never
introduce another slot.

Everything that comes from a user or from the store (conversation text, memories, facts, the
question) is inserted JSON-encoded after its chat control markers are stripped: quotes, newlines,
braces and fake role headers stay inside a JSON string and cannot end the prompt's structure.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from .chat import render_chat, strip_special_tokens

TEMPLATE_DIR = Path(__file__).with_name("templates")
_SLOT = re.compile(r"\{\{(\w+)\}\}")
_SECTION = re.compile(r"^=== (system|user) ===[ \t]*$", re.MULTILINE)


class Op(str, Enum):
    """A memory operation; its value is also the default adapter and template name."""

    EXTRACT = "extract"
    UPDATE = "update"
    ANSWER = "answer"


SLOTS: dict[Op, frozenset[str]] = {
    Op.EXTRACT: frozenset({"conversation", "today"}),
    Op.UPDATE: frozenset({"old_memory", "facts"}),
    Op.ANSWER: frozenset({"memories", "question"}),
}


@dataclass(frozen=True)
class PromptTemplate:
    """One operation's template: an optional system part and a user part."""

    op: Op
    system: str | None
    user: str

    def slots(self) -> set[str]:
        return set(_SLOT.findall(self.system or "")) | set(_SLOT.findall(self.user))

    def messages(self, values: dict[str, str]) -> list[dict[str, str]]:
        """Fill the slots (values are inserted verbatim, in one pass) and return chat messages."""
        def fill(text: str) -> str:
            return _SLOT.sub(lambda m: values[m.group(1)], text)

        out = [] if self.system is None else [{"role": "system", "content": fill(self.system)}]
        out.append({"role": "user", "content": fill(self.user)})
        return out


@dataclass(frozen=True)
class Templates:
    """The three templates a memory loop needs."""

    extract: PromptTemplate
    update: PromptTemplate
    answer: PromptTemplate

    def __getitem__(self, op: Op) -> PromptTemplate:
        return getattr(self, Op(op).value)


@dataclass(frozen=True)
class DialogTurn:
    """One message of a conversation to extract facts from."""

    speaker: str
    text: str


def parse_template(op: Op, text: str) -> PromptTemplate:
    """Parse a template file's text; raise ``ValueError`` if sections or slots are wrong."""
    pieces = _SECTION.split(text)
    if pieces[0].strip():
        raise ValueError(f"{op.value} template: text before the first '=== role ===' header")
    sections: dict[str, str] = {}
    for role, body in zip(pieces[1::2], pieces[2::2]):
        if role in sections:
            raise ValueError(f"{op.value} template: duplicate {role} section")
        sections[role] = body.strip("\n")
    if "user" not in sections:
        raise ValueError(f"{op.value} template: missing '=== user ===' section")
    tpl = PromptTemplate(op=op, system=sections.get("system"), user=sections["user"])
    found, expected = tpl.slots(), SLOTS[op]
    if found != expected:
        raise ValueError(f"{op.value} template: slots {sorted(found)}, expected {sorted(expected)}")
    return tpl


def load_templates(directory: str | Path | None = None) -> Templates:
    """Load ``{extract,update,answer}.txt`` from ``directory`` (default: the package's own)."""
    root = Path(directory) if directory is not None else TEMPLATE_DIR
    loaded = {op.value: parse_template(op, (root / f"{op.value}.txt").read_text("utf-8"))
              for op in Op}
    return Templates(**loaded)


def write_templates(directory: str | Path) -> list[Path]:
    """Copy the package templates into ``directory`` (e.g. a bundle's ``prompts/``)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for op in Op:
        dst = out / f"{op.value}.txt"
        shutil.copyfile(TEMPLATE_DIR / f"{op.value}.txt", dst)
        paths.append(dst)
    return paths


def as_data(value: Any) -> str:
    """JSON-encode ``value`` after stripping chat control markers from every string in it."""
    return json.dumps(_clean(value), ensure_ascii=False)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return strip_special_tokens(value)
    if isinstance(value, dict):
        return {strip_special_tokens(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def extract_messages(templates: Templates, turns: Sequence[DialogTurn],
                     today: str | None = None) -> list[dict[str, str]]:
    """Messages asking the extract adapter for ``{"facts": [...]}`` from ``turns``."""
    # The speaker goes last: the name a fact starts with then sits a fixed distance before the
    # answer, whatever the turn's length (a small adapter learns to copy it far sooner).
    conversation = [{"text": t.text, "speaker": t.speaker} for t in turns]
    today = today if today is not None else _dt.date.today().isoformat()
    return templates.extract.messages({"conversation": as_data(conversation),
                                       "today": as_data(today)[1:-1]})


def update_messages(templates: Templates, old_memory: Sequence[tuple[str, str]],
                    facts: Sequence[str]) -> list[dict[str, str]]:
    """Messages for the update adapter; ``old_memory`` holds ``(short_id, text)`` pairs."""
    old = [{"id": sid, "text": text} for sid, text in old_memory]
    return templates.update.messages({"old_memory": as_data(old), "facts": as_data(list(facts))})


def answer_messages(templates: Templates, question: str,
                    memories: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Messages for the answer adapter; ``memories`` holds ``(timestamp, text)`` pairs."""
    shown = [f"{ts}: {text}" for ts, text in memories]
    return templates.answer.messages({"memories": as_data(shown), "question": as_data(question)})


_MARK = "\ue000"  # a private-use character: no template, chat format or control marker has it


def constant_head(chat_format: str, template: PromptTemplate) -> str:
    """The rendered prompt up to its first slot: the same text on every call of this template.

    The memory loop prefills it once per adapter and keeps its KV cache (prefix reuse); the
    templates put their per-turn slots last so the head is nearly the whole prompt.
    """
    rendered = render(chat_format, template.messages({name: _MARK for name in template.slots()}))
    return rendered.split(_MARK, 1)[0]


def render(chat_format: str, messages: list[dict[str, str]]) -> str:
    """Render messages in ``chat_format`` with the generation prompt appended."""
    return render_chat(chat_format, messages, add_generation_prompt=True)
