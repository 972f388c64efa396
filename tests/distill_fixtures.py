"""A tiny LoCoMo-shaped zip and short prompt templates for the distill tests (no real data)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

HOBBIES = ["tea", "jazz", "chess", "rain", "hiking", "cats", "pizza", "books"]


def conversation(k: int) -> dict:
    """Conversation ``k``: two speakers, two sessions; most turns have an observation fact."""
    a, b = f"Ann{k}", f"Bob{k}"
    obj: dict = {"speaker_a": a, "speaker_b": b}
    obs_all = {}
    for s in (1, 2):
        turns, obs = [], {a: [], b: []}
        for t in range(1, 7):
            who = a if t % 2 else b
            hobby = HOBBIES[(k + s * 3 + t) % len(HOBBIES)]
            dia = f"D{s}:{t}"
            turns.append({"speaker": who, "dia_id": dia, "text": f"I like {hobby}."})
            if t != 6:
                obs[who].append([f"{who} likes {hobby}.", dia])
        obj[f"session_{s}"] = turns
        obj[f"session_{s}_date_time"] = f"1:00 pm on {s} May, 2023"
        obs_all[f"session_{s}_observation"] = obs
    obj.update(obs_all)
    obj["qa"] = [
        {"question": f"What does {a} like?", "answer": HOBBIES[(k + 4) % len(HOBBIES)], "evidence": ["D1:1"], "category": 1},
        {"question": f"What does {b} like?", "answer": HOBBIES[(k + 5) % len(HOBBIES)], "evidence": ["D1:2"], "category": 4},
        {"question": f"What did {a} say about golf?", "evidence": ["D1:6"], "category": 5,
         "adversarial_answer": "golf is fun"},
    ]
    return obj


def write_locomo_zip(path: Path, n: int = 3) -> Path:
    """A zip laid out like locomo10.zip: one JSON per conversation."""
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(n):
            zf.writestr(f"data/locomo/{k + 1}.json", json.dumps(conversation(k)))
    return path


SHORT_TEMPLATES = {
    "extract": "=== user ===\nFacts? {{conversation}} {{today}}",
    "update": "=== user ===\nMemory {{old_memory}} new {{facts}}",
    "answer": "=== user ===\n{{memories}} Q {{question}}",
}


def write_short_templates(folder: Path) -> Path:
    """Templates with the runtime's slots but almost no instructions, so tests train on ~60 tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    for op, text in SHORT_TEMPLATES.items():
        (folder / f"{op}.txt").write_text(text + "\n")
    return folder
