"""Run the Python memory loop on a LoCoMo slice and dump its store, for the Kotlin core to match.

    python android_demo/tools/python_locomo_store.py BUNDLE LOCOMO.zip OUT.json \
        [--turns 8] [--sessions 1] [--questions 3] [--max-new-tokens 16] [--backend onnx]

The slice: the first conversation, its first ``--sessions`` sessions, the first ``--turns`` turns
of each, then the first ``--questions`` non-adversarial questions, exactly as ``memlora locomo``
walks it (each turn ingested for its speaker with the session date as timestamp; greedy; the raw
fallback on, so a random-weight model still fills the store). The dump names memories m1, m2, ...
in creation order (ids are random uuid4) and lists every raw model output in call order.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(bundle: str, data: str, turns: int, sessions: int, questions: int, max_new_tokens: int,
        backend: str, update_top_k: int = 5, answer_top_k: int = 30) -> dict:
    from memlora.eval.locomo import _date, _dialog
    from memlora.memory import GenerationSettings, LoopSettings, MemoryStore, Op
    from memlora.memory.locomo import load_locomo
    from memlora.memory.ingest import ingest
    from memlora.runtime import open_bundle

    conv = load_locomo(data)[0]
    session = open_bundle(bundle, backend, threads=1, embedder=False)
    gen = GenerationSettings(max_new_tokens=max_new_tokens, eos_ids=session.eos_ids)
    settings = LoopSettings(extract=gen, update=gen, answer=gen, update_top_k=update_top_k, answer_top_k=answer_top_k)
    store = MemoryStore(":memory:")
    loop = session.loop(store, settings)
    calls: list[dict] = []
    seen = {op: 0 for op in Op}

    def record():
        for op in Op:
            if loop.stats[op].calls > seen[op]:
                seen[op] = loop.stats[op].calls
                calls.append({"op": op.value, "raw": loop.last_raw[op]})

    users = [f"{conv.sample_id}:{conv.speaker_a}", f"{conv.sample_id}:{conv.speaker_b}"]
    n_turns = 0
    for sess in conv.sessions[:sessions]:
        for turn in sess.turns[:turns]:
            ingest(loop, [_dialog(turn)], f"{conv.sample_id}:{turn.speaker}", at=_date(sess), today=_date(sess),
                   raw_fallback=True)
            record()
            n_turns += 1
    answers = []
    for q in [q for q in conv.qa if q.category != 5][:questions]:
        ans = loop.answer(q.question, users)
        record()
        answers.append({"question": q.question, "text": ans.text, "memories": [m.id for m in ans.memories]})
    refs: dict[str, str] = {}

    def ref(mid: str) -> str:
        return refs.setdefault(mid, f"m{len(refs) + 1}")

    history = [{"memory": ref(h.memory_id), "event": h.event, "old_text": h.old_text, "new_text": h.new_text,
                "at": h.at, "actor": h.actor} for h in store.history()]
    memories = [{"memory": ref(m.id), "user": m.user, "text": m.text, "created_at": m.created_at,
                 "updated_at": m.updated_at} for m in store.list()]
    for a in answers:
        a["memories"] = [ref(m) for m in a["memories"]]
    out = {"sample_id": conv.sample_id, "turns": n_turns, "text_search": store.text_search,
           "settings": {"max_new_tokens": max_new_tokens, "update_top_k": update_top_k, "answer_top_k": answer_top_k,
                        "raw_fallback": True, "backend": backend},
           "memories": memories, "history": history, "calls": calls, "answers": answers}
    store.close()
    session.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--backend", default="onnx")
    a = ap.parse_args()
    doc = run(a.bundle, a.data, a.turns, a.sessions, a.questions, a.max_new_tokens, a.backend)
    Path(a.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"python loop: {doc['turns']} turns, {len(doc['memories'])} memories, {len(doc['history'])} history events,"
          f" {len(doc['calls'])} model calls -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
