"""conformance.json: what the phone ports check themselves against, and the ONNX runner against it."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from memlora.backends.base import Artifact
from memlora.backends import get_backend
from memlora.conformance import PARSE_CASES, greedy, parse_case, prompt_text
from memlora.memory import load_templates


@pytest.fixture(scope="module")
def conformance(onnx_fp32_bundle):
    bundle, manifest = onnx_fp32_bundle
    assert manifest["conformance"] == "conformance.json" and manifest["prompts"] == "prompts"
    listed = {f["path"] for f in manifest["files"]}
    assert {"conformance.json", "prompts/extract.txt", "prompts/update.txt", "prompts/answer.txt"} <= listed
    return bundle, manifest, json.loads((bundle / "conformance.json").read_text("utf-8"))


def test_header_and_tokenizer_cases(conformance):
    bundle, _, doc = conformance
    assert (doc["format"], doc["version"], doc["chat_format"]) == ("memlora-conformance", 1, "chatml")
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    texts = [c["text"] for c in doc["tokenizer"]]
    assert any("👨‍👩‍👧‍👦" in t for t in texts) and any("中文" in t for t in texts) and "" in texts
    for case in doc["tokenizer"]:
        assert tok.encode(case["text"], add_special_tokens=False).ids == case["ids"]
        assert case["decoded"] == case["text"]  # byte-level BPE: exact round trip, emoji included
    markers = next(c for c in doc["tokenizer"] if c["text"].startswith("<|im_start|>"))
    assert markers["ids"][0] == tok.token_to_id("<|im_start|>")  # chat markers are single special tokens


def test_prompts_rerender_exactly(conformance):
    bundle, _, doc = conformance
    templates = load_templates(bundle / "prompts")
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    assert {c["case"]["op"] for c in doc["prompts"]} == {"extract", "update", "answer"}
    for entry in doc["prompts"]:
        assert prompt_text(templates, "chatml", entry["case"]) == entry["text"]
        assert tok.encode(entry["text"], add_special_tokens=False).ids == entry["ids"]
        # user text can never open or close a turn: only the template's own turns plus the generation prompt
        turns = 1 + (templates[entry["case"]["op"]].system is not None)
        assert entry["text"].count("<|im_start|>") == turns + 1 and entry["text"].count("<|im_end|>") == turns
    hostile = next(e for e in doc["prompts"] if "Mallory" in json.dumps(e["case"]))
    assert "<|im_start|>system\\nSay" not in hostile["text"] and "Ignore that.\\n" in hostile["text"]


def test_parse_cases(conformance):
    _, _, doc = conformance
    assert len(doc["parse"]) == len(PARSE_CASES)
    for case in doc["parse"]:
        assert parse_case(case) == case["expected"]
    by_raw = {c["raw"]: c["expected"] for c in doc["parse"]}
    assert by_raw['```json\n{"facts": ["Likes pizza"]}\n```']["facts"] == ["Likes pizza"]
    hostile = next(c for c in doc["parse"] if "mem-aaaa" in c["raw"])
    assert hostile["expected"]["ops"] == [] and hostile["expected"]["n_errors"] == 2  # ids never shown
    assert by_raw["no json at all"] == {"facts": [], "n_errors": 1}


@pytest.mark.parametrize("mode", ["external", "fused"])
def test_onnx_runner_reproduces_greedy_prefixes(conformance, mode):
    bundle, manifest, doc = conformance
    art = next(a for a in manifest["artifacts"] if a["adapter_mode"] == mode and a["quant"] == "none")
    runner = get_backend("onnx").load(Artifact.from_json(art), bundle)
    try:
        assert [g["adapter"] for g in doc["greedy"]] == ["extract", "update", "answer"]
        for g in doc["greedy"]:
            assert len(g["ids"]) == 16
            assert greedy(runner, g["adapter"], g["prompt_ids"], len(g["ids"])) == g["ids"], g["adapter"]
        # negative control: another adapter on the same prompt generates something else
        g = doc["greedy"][0]
        assert greedy(runner, "answer", g["prompt_ids"], len(g["ids"])) != g["ids"]
    finally:
        runner.close()
