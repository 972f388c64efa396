"""Load the LoCoMo benchmark (snap-research/locomo) into typed records.

Two layouts are accepted, in a ``.zip`` or a ``.json`` file:

* flat, as in ``locomo10.zip``: one JSON object per conversation with ``speaker_a``,
  ``speaker_b``, ``session_N``, ``session_N_date_time`` and ``qa`` at the top level (the sample id
  is the file name without ``.json``);
* nested, as in the repository's ``locomo10.json``: a list of objects with ``sample_id``,
  ``conversation`` (holding the speakers and sessions) and ``qa``.

Category-5 (adversarial) questions carry their answer under ``adversarial_answer``; it becomes
``QA.answer`` when no ``answer`` is present. The data are CC BY-NC 4.0: never copy them into the
repository.
"""
from __future__ import annotations

import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..core.errors import MemloraError

_SESSION = re.compile(r"^session_(\d+)$")
ADVERSARIAL = 5


@dataclass(frozen=True)
class Turn:
    speaker: str
    dia_id: str
    text: str
    img_url: list[str] = field(default_factory=list)
    blip_caption: str | None = None

    def display_text(self) -> str:
        """The text, with the image caption appended as LoCoMo baselines do."""
        if self.blip_caption:
            return f"{self.text} [shares {self.blip_caption}]"
        return self.text


@dataclass(frozen=True)
class Session:
    index: int
    date_time: str
    turns: list[Turn]


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    evidence: list[str]
    category: int
    adversarial_answer: str | None = None

    @property
    def adversarial(self) -> bool:
        return self.category == ADVERSARIAL


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: list[Session]
    qa: list[QA]

    def turns(self) -> Iterator[tuple[Session, Turn]]:
        for s in self.sessions:
            for t in s.turns:
                yield s, t


def _turn(raw: dict[str, Any]) -> Turn:
    img = raw.get("img_url") or []
    return Turn(speaker=str(raw["speaker"]), dia_id=str(raw["dia_id"]), text=str(raw["text"]),
                img_url=[img] if isinstance(img, str) else [str(u) for u in img],
                blip_caption=raw.get("blip_caption"))


def _qa(raw: dict[str, Any]) -> QA:
    adv = raw.get("adversarial_answer")
    answer = raw.get("answer", adv)
    return QA(question=str(raw["question"]), answer="" if answer is None else str(answer),
              evidence=[str(e) for e in raw.get("evidence", [])],
              category=int(raw["category"]), adversarial_answer=None if adv is None else str(adv))


def parse_conversation(raw: dict[str, Any], sample_id: str | None = None) -> Conversation:
    """Build a :class:`Conversation` from one flat or nested LoCoMo object."""
    if not isinstance(raw, dict):
        raise ValueError(f"LoCoMo conversation must be a JSON object, got {type(raw).__name__}")
    conv = raw.get("conversation", raw)
    sid = raw.get("sample_id", sample_id)
    if sid is None:
        raise ValueError("LoCoMo conversation without a sample_id")
    sessions = []
    for key, value in conv.items():
        m = _SESSION.match(key)
        if m and isinstance(value, list):
            idx = int(m.group(1))
            sessions.append(Session(idx, str(conv.get(f"session_{idx}_date_time", "")),
                                    [_turn(t) for t in value]))
    sessions.sort(key=lambda s: s.index)
    return Conversation(sample_id=str(sid), speaker_a=str(conv["speaker_a"]),
                        speaker_b=str(conv["speaker_b"]), sessions=sessions,
                        qa=[_qa(q) for q in raw.get("qa", [])])


def _from_json(data: Any, name: str) -> Iterator[Conversation]:
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield parse_conversation(item, sample_id=f"{name}-{i}")
    elif isinstance(data, dict):
        yield parse_conversation(data, sample_id=name)
    else:
        raise ValueError(f"{name}: expected a JSON object or list, got {type(data).__name__}")


def iter_locomo(path: str | Path) -> Iterator[Conversation]:
    """Yield conversations from a LoCoMo ``.zip`` or ``.json`` file, in file-name order.

    A file that is missing, not a zip, truncated, or holds invalid JSON or the wrong layout is a
    :class:`~memlora.errors.MemloraError` naming it (the whole file is read before yielding).
    """
    path = Path(path)
    fix = "pass locomo10.zip (or a LoCoMo .json) as distributed"
    if path.suffix not in (".zip", ".json"):
        raise MemloraError("expected a .zip or .json LoCoMo file", path, fix)
    if not path.is_file():
        raise MemloraError("LoCoMo file not found", path, fix)
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = sorted((n for n in zf.namelist() if n.endswith(".json")), key=lambda n: (len(n), n))
                if not names:
                    raise MemloraError("the zip holds no .json file", path, fix)
                convs = [c for n in names for c in _from_json(json.loads(zf.read(n)), PurePosixPath(n).stem)]
        else:
            convs = list(_from_json(json.loads(path.read_text("utf-8")), path.stem))
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise MemloraError(f"not a LoCoMo file: not a readable zip ({type(e).__name__}: {e})", path, fix) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MemloraError(f"not a LoCoMo file: invalid JSON ({type(e).__name__}: {str(e)[:120]})", path, fix) from None
    except (KeyError, TypeError, ValueError) as e:
        raise MemloraError(f"not a LoCoMo file: not in its layout ({type(e).__name__}: {str(e)[:120]})", path, fix) from None
    yield from convs


def load_locomo(path: str | Path) -> list[Conversation]:
    """All conversations of a LoCoMo file (see :func:`iter_locomo`)."""
    return list(iter_locomo(path))
