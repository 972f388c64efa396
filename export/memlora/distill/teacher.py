"""``memlora teacher locomo``: LoCoMo's own annotations as a teacher for the three adapters.

* **extract**: each turn's target is ``{"facts": [...]}`` built from the conversation's
  ``session_N_observation`` items, facts an LLM wrote per turn with the turn id they came from
  (``["Calvin is excited to learn about Japanese culture...", "D1:5"]``). Turns without an
  observation teach ``{"facts": []}``; only a share of them is kept (``empty_extract_share``) so
  the student does not learn to return nothing.
* **update**: the facts are replayed, speaker by speaker, through a real
  :class:`~memlora.memory.store.MemoryStore` with the loop's retrieval (each fact's top-5, the
  union shown under small ids), and the event per fact is derived by rules: NONE for a
  near-duplicate of a shown memory, DELETE when a negated fact about the same thing contradicts
  one, UPDATE when a later fact about the same subject supersedes one, ADD otherwise. Every such
  record says ``"rule_derived": true`` and names the rule and similarity per event. The target
  lists one event per new fact (memories it does not touch are left out, which the parser reads as
  no change): shorter than Mem0's full listing, so it fits a small model's output budget.
* **answer**: each ``qa`` item, with the evidence turns' facts as the retrieved memories
  (timestamped with their session's date; the turn's own text when a turn has no fact). Category 5
  (adversarial) is handled as LoCoMo's evaluation does: the expected answer is "Not mentioned in
  the conversation" (``include_adversarial=False`` leaves them out).

Conversations are split by conversation (train / validation / held-out, the last ones held out),
so no example is evaluated on a conversation it trained on. Every split is filtered
(:func:`~memlora.distill.records.filter_records`); ``teacher.json`` records the counts.
"""
from __future__ import annotations

import json
import random
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..memory.locomo import ADVERSARIAL, Conversation, Session, Turn, parse_conversation
from ..memory.loop import LoopSettings
from ..memory.parsing import Event, IdMap, parse_update
from ..memory.prompts import Op
from ..memory.store import MemoryStore
from ._core import MemloraError, atomic_dir
from .records import (FORMAT, SPLITS, FilterReport, TeacherRecord, file_sha256, filter_records,
                      write_jsonl)
from .teacher_rules import decide, similarity

__all__ = ["ADVERSARIAL_ANSWER", "LocomoItem", "TeacherSettings", "conversation_records", "decide", "read_locomo",
           "similarity", "split_conversations", "teacher_locomo"]
ADVERSARIAL_ANSWER = "Not mentioned in the conversation"
"""The expected answer to a category-5 question (LoCoMo scores these by this phrase)."""

_OBS = re.compile(r"^session_(\d+)_observation$")
_DIA = re.compile(r"D\d+:\d+")


@dataclass(frozen=True)
class TeacherSettings:
    """How LoCoMo becomes teacher records.

    Attributes:
        val_conversations, heldout_conversations: conversations (the last ones in file order) set
            aside for validation and for the held-out evaluation.
        include_adversarial: keep category-5 questions (target: :data:`ADVERSARIAL_ANSWER`).
        empty_extract_share: share of fact-less turns kept as ``{"facts": []}`` examples.
        max_target_chars: longer teacher outputs are dropped.
        duplicate_threshold: content-word Jaccard at or above which a fact is a NONE.
        supersede_threshold: Jaccard at or above which a fact about the same subject UPDATEs.
        update_top_k: memories retrieved per fact (the loop's default).
        seed: for the choice of fact-less turns.
    """

    val_conversations: int = 1
    heldout_conversations: int = 1
    include_adversarial: bool = True
    empty_extract_share: float = 0.2
    max_target_chars: int = 600
    duplicate_threshold: float = 0.7
    supersede_threshold: float = 0.4
    update_top_k: int = LoopSettings().update_top_k
    seed: int = 0

    def __post_init__(self) -> None:
        if self.val_conversations < 1 or self.heldout_conversations < 1:
            raise MemloraError("--val and --heldout must each be at least 1 conversation",
                               fix="pass --val 1 --heldout 1 or more")
        if not 0 <= self.empty_extract_share <= 1:
            raise MemloraError(f"--empty-extract-share {self.empty_extract_share} is not in [0, 1]",
                               fix="pass a share such as 0.2")
        if self.max_target_chars < 8:
            raise MemloraError("--max-target-chars must be at least 8", fix="pass e.g. 600")
        if not 0 < self.supersede_threshold <= self.duplicate_threshold <= 1:
            raise MemloraError("thresholds must satisfy 0 < supersede <= duplicate <= 1",
                               fix="use the defaults 0.4 and 0.7")
        if self.update_top_k < 1:
            raise MemloraError("--update-top-k must be >= 1", fix="pass 5 (the loop's default)")


# -- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocomoItem:
    """A conversation plus its per-turn facts: ``facts[dia_id]`` in observation order."""

    conversation: Conversation
    facts: dict[str, list[str]]


def _observations(raw: dict[str, Any]) -> dict[str, list[str]]:
    conv = raw.get("conversation", raw)
    blocks = {**raw.get("observation", {}), **{k: v for k, v in raw.items() if _OBS.match(k)},
              **{k: v for k, v in conv.items() if _OBS.match(k)}}
    facts: dict[str, list[str]] = {}
    for key in sorted(blocks, key=lambda k: int(_OBS.match(k).group(1)) if _OBS.match(k) else 0):
        by_speaker = blocks[key]
        if not isinstance(by_speaker, dict):
            continue
        for items in by_speaker.values():
            for item in items if isinstance(items, list) else []:
                if not (isinstance(item, (list, tuple)) and len(item) >= 2 and isinstance(item[0], str)):
                    continue
                text = " ".join(item[0].split())
                ids = item[1] if isinstance(item[1], list) else [item[1]]
                for dia in {d for i in ids for d in _DIA.findall(str(i))}:
                    if text and text not in facts.setdefault(dia, []):
                        facts[dia].append(text)
    return facts


def _raw_conversations(path: Path) -> Iterator[tuple[dict, str]]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = sorted((n for n in zf.namelist() if n.endswith(".json")), key=lambda n: (len(n), n))
            for n in names:
                data = json.loads(zf.read(n))
                for i, item in enumerate(data if isinstance(data, list) else [data]):
                    yield item, PurePosixPath(n).stem if not isinstance(data, list) else f"{PurePosixPath(n).stem}-{i}"
    elif path.suffix == ".json":
        data = json.loads(path.read_text("utf-8"))
        for i, item in enumerate(data if isinstance(data, list) else [data]):
            yield item, path.stem if not isinstance(data, list) else f"{path.stem}-{i}"
    else:
        raise ValueError("expected a .zip or .json LoCoMo file")


def read_locomo(path: str | Path) -> list[LocomoItem]:
    """Conversations and their observation facts from a LoCoMo ``.zip`` or ``.json``."""
    path = Path(path)
    if not path.is_file():
        raise MemloraError("LoCoMo file not found", path, "pass the locomo10.zip (snap-research/locomo) path")
    try:
        items = [LocomoItem(parse_conversation(raw, sid), _observations(raw))
                 for raw, sid in _raw_conversations(path)]
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as e:
        raise MemloraError(f"not a LoCoMo file ({type(e).__name__}: {str(e)[:200]})", path,
                           "pass the snap-research/locomo data (.zip of per-conversation JSON or locomo10.json)") from None
    if not items:
        raise MemloraError("no conversations in the file", path, "pass a non-empty LoCoMo file")
    return items


# -- building records ----------------------------------------------------------------------------

def _date(session: Session) -> str:
    return session.date_time or f"session {session.index}"


def _turn_text(turn: Turn) -> str:
    return turn.display_text()


def conversation_records(item: LocomoItem, s: TeacherSettings) -> list[TeacherRecord]:
    """All extract, update and answer records of one conversation (before filtering)."""
    conv, facts = item.conversation, item.facts
    cid = conv.sample_id
    rng = random.Random(f"{s.seed}:{cid}")
    out: list[TeacherRecord] = []
    base = {"dataset": "locomo", "conversation": cid}
    turn_index: dict[str, tuple[Session, Turn]] = {}
    store = MemoryStore(":memory:")
    try:
        for sess, turn in conv.turns():
            turn_index[turn.dia_id] = (sess, turn)
            tf = facts.get(turn.dia_id, [])
            if not turn.text.strip():
                continue
            if tf or rng.random() < s.empty_extract_share:
                out.append(TeacherRecord(
                    id=f"locomo:{cid}:{turn.dia_id}:extract", op=Op.EXTRACT,
                    vars={"turns": [{"speaker": turn.speaker, "text": _turn_text(turn)}], "today": _date(sess)},
                    output=json.dumps({"facts": tf}, ensure_ascii=False),
                    source=base | {"dia_id": turn.dia_id, "session": sess.index,
                                   "teacher": "locomo-observation", "rule_derived": False}))
            if tf:
                out.append(_update_record(store, f"{cid}:{turn.speaker}", tf, _date(sess), s,
                                          base | {"dia_id": turn.dia_id, "session": sess.index}))
    finally:
        store.close()
    for qi, qa in enumerate(conv.qa):
        if qa.adversarial and not s.include_adversarial:
            continue
        memories, origin = [], "observation"
        for ev in qa.evidence:
            for dia in _DIA.findall(ev):
                if dia not in turn_index:
                    continue
                sess, turn = turn_index[dia]
                texts = facts.get(dia) or [f"{turn.speaker}: {_turn_text(turn)}"]
                if not facts.get(dia):
                    origin = "observation+turn-text" if memories else "turn-text"
                for t in texts:
                    m = {"timestamp": _date(sess), "text": t}
                    if m not in memories:
                        memories.append(m)
        answer = ADVERSARIAL_ANSWER if qa.adversarial else qa.answer
        out.append(TeacherRecord(
            id=f"locomo:{cid}:qa{qi}:answer", op=Op.ANSWER,
            vars={"memories": memories, "question": qa.question}, output=str(answer),
            source=base | {"qa_index": qi, "category": qa.category, "evidence": qa.evidence,
                           "gold": qa.answer, "memories_from": origin, "teacher": "locomo-qa",
                           "rule_derived": qa.category == ADVERSARIAL}))
    return out


def _update_record(store: MemoryStore, user: str, facts: list[str], at: str, s: TeacherSettings,
                   source: dict) -> TeacherRecord:
    """Retrieve as the loop does, decide events by rule, apply them, and return the record."""
    seen = {}
    for f in facts:
        for hit in store.search(f, user, s.update_top_k):
            seen.setdefault(hit.memory.id, hit.memory)
    old = list(seen.values())
    id_map = IdMap(m.id for m in old)
    shown = [(id_map.short(m.id), m.text) for m in old]
    touched: set[str] = set()
    items, rules = [], []
    for i, f in enumerate(facts):
        d = decide(f, shown, touched, s)
        if d["event"] != "ADD":
            touched.add(d["id"])
        else:
            d["id"] = str(len(shown) + sum(1 for it in items if it["event"] == "ADD"))
        rules.append({"fact": i, "event": d["event"], "rule": d.pop("rule"), "similarity": d.pop("similarity")})
        items.append({k: d[k] for k in ("id", "text", "event", "old_memory") if k in d})
    output = json.dumps({"memory": items}, ensure_ascii=False)
    parsed = parse_update(output, id_map)
    store.apply(parsed.ops, user, at=at, actor="teacher")
    return TeacherRecord(
        id=f"locomo:{source['conversation']}:{source['dia_id']}:update", op=Op.UPDATE,
        vars={"old_memory": [{"id": sid, "text": t} for sid, t in shown], "facts": list(facts)},
        output=output, source=source | {"user": user, "teacher": "rules", "rule_derived": True, "rules": rules})


# -- the verb ------------------------------------------------------------------------------------

def split_conversations(items: list[LocomoItem], s: TeacherSettings) -> dict[str, list[LocomoItem]]:
    """train / validation / heldout by conversation: the last ones in file order are held out."""
    need = s.val_conversations + s.heldout_conversations + 1
    if len(items) < need:
        raise MemloraError(f"{len(items)} conversation(s) cannot be split into train, "
                           f"{s.val_conversations} validation and {s.heldout_conversations} held-out",
                           fix=f"give at least {need} conversations or lower --val / --heldout")
    h, v = s.heldout_conversations, s.val_conversations
    return {"train": items[: len(items) - h - v], "validation": items[len(items) - h - v: len(items) - h],
            "heldout": items[len(items) - h:]}


def teacher_locomo(data: str | Path, out: str | Path, settings: TeacherSettings | None = None,
                   force: bool = False) -> dict[str, Any]:
    """Write ``out/{train,validation,heldout}.jsonl`` and ``out/teacher.json`` from LoCoMo.

    Returns the summary written to ``teacher.json``: format, source file and hash, the split's
    conversation ids, settings, and per split and operation the records kept and dropped by reason.
    """
    s = settings or TeacherSettings()
    data, out = Path(data), Path(out)
    items = read_locomo(data)
    splits = split_conversations(items, s)
    seen: set[str] = set()
    summary: dict[str, Any] = {"format": FORMAT, "source": {"dataset": "locomo", "file": str(data),
                                                            "sha256": file_sha256([data])},
                               "settings": asdict(s), "splits": {}, "totals": {}}
    total = FilterReport()
    with atomic_dir(out, force) as tmp:
        for name in SPLITS:
            raw = [r for it in splits[name] for r in conversation_records(it, s)]
            kept, rep = filter_records(raw, s.max_target_chars, seen=seen)
            write_jsonl(tmp / f"{name}.jsonl", kept)
            total.merge(rep)
            summary["splits"][name] = {"conversations": [it.conversation.sample_id for it in splits[name]],
                                       "file": f"{name}.jsonl", **rep.as_dict()}
        summary["totals"] = total.as_dict()
        summary["data_sha256"] = file_sha256([tmp / f"{n}.jsonl" for n in SPLITS])
        (tmp / "teacher.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
