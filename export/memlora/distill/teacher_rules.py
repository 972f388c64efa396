"""Rules that derive ``memlora teacher``'s update events (ADD / UPDATE / DELETE / NONE) from LoCoMo facts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..memory.retrieval import tokens

if TYPE_CHECKING:
    from .teacher import TeacherSettings

_STOP = frozenset("a an the is was are were be been to of and or in on at for with by from as it its"
                  " that this he she they his her their has have had will would about also very".split())
_NEGATION = frozenset("not no never none nobody nothing neither nor dislikes hates stopped quit"
                      " doesnt dont didnt isnt wasnt cannot cant wont longer".split())


def _content(text: str) -> set[str]:
    return {t for t in tokens(text.replace("'", "")) if t not in _STOP}


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the content words of two facts."""
    x, y = _content(a), _content(b)
    return len(x & y) / len(x | y) if x and y else 0.0


def _negated(text: str) -> bool:
    return bool(set(tokens(text.replace("'", ""))) & _NEGATION)


def _subject(text: str) -> str:
    words = tokens(text)
    return words[0] if words else ""


def decide(fact: str, shown: list[tuple[str, str]], touched: set[str],
           s: TeacherSettings) -> dict[str, Any]:
    """The rule-derived event for ``fact`` against the shown ``(short id, text)`` memories."""
    best_id, best_text, best = None, None, 0.0
    for sid, text in shown:
        sim = similarity(fact, text)
        if sim > best and sid not in touched:
            best_id, best_text, best = sid, text, sim
    if best_id is not None and best >= s.duplicate_threshold:
        return {"event": "NONE", "id": best_id, "text": best_text, "rule": "near-duplicate",
                "similarity": round(best, 3)}
    if best_id is not None and best >= s.supersede_threshold and _subject(fact) == _subject(best_text):
        if _negated(fact) != _negated(best_text) and _negated(fact):
            return {"event": "DELETE", "id": best_id, "text": best_text, "rule": "negated-contradiction",
                    "similarity": round(best, 3)}
        return {"event": "UPDATE", "id": best_id, "text": fact, "old_memory": best_text,
                "rule": "same-subject-supersedes", "similarity": round(best, 3)}
    return {"event": "ADD", "id": str(len(shown)), "text": fact, "rule": "new-information",
            "similarity": round(best, 3)}

