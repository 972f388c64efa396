"""Generation: greedy determinism, seeded sampling, stop strings/eos, adapter resets, budgets."""
import logging

import numpy as np
import pytest

from memlora.memory.engine import GenerationSettings, eos_ids_for, generate, sample
from memory_fixtures import BigramRunner, ScriptedRunner, make_tokenizer

PROMPT = "<|im_start|>user\nHi, my name is John.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def tok():
    return make_tokenizer()


def test_greedy_follows_script_and_stops_on_eos(tok):
    reply = '{"facts": ["Name is John"]}'
    runner = ScriptedRunner.from_texts(tok, {"extract": [reply]})
    res = generate(runner, tok, "extract", PROMPT, GenerationSettings(max_new_tokens=100))
    assert res.text == reply and res.stopped_by == "eos"
    assert res.token_ids == tok.encode(reply, add_special_tokens=False).ids
    assert res.prompt_tokens == len(tok.encode(PROMPT, add_special_tokens=False).ids)
    # the prompt's markers were encoded as single special tokens, not as text
    assert tok.token_to_id("<|im_start|>") in runner.prompts[0][1]
    assert runner.calls[:3] == [("set_adapter", "extract"), ("reset",), ("reset",)]
    assert res.prefill_s >= 0 and res.decode_s >= 0


def test_greedy_is_deterministic(tok):
    runs = [generate(BigramRunner(tok.get_vocab_size()), tok, "answer", PROMPT,
                     GenerationSettings(max_new_tokens=20, eos_ids=())) for _ in range(2)]
    assert runs[0].token_ids == runs[1].token_ids and len(runs[0].token_ids) == 20
    assert runs[0].stopped_by == "length"


def test_seeded_sampling_reproducible_and_seed_sensitive(tok):
    def run(seed):
        s = GenerationSettings(max_new_tokens=30, temperature=1.0, top_p=0.95, seed=seed,
                               eos_ids=())
        return generate(BigramRunner(tok.get_vocab_size()), tok, "answer", PROMPT, s).token_ids

    assert run(1) == run(1)
    assert run(1) != run(2)
    greedy = generate(BigramRunner(tok.get_vocab_size()), tok, "answer", PROMPT,
                      GenerationSettings(max_new_tokens=30, eos_ids=())).token_ids
    assert run(1) != greedy


def test_sample_top_p_and_temperature():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    # cumulative mass is 0.5, 0.8, 0.95, 1.0: top_p=0.4 keeps token 0 alone (0.5 >= 0.4),
    # top_p=0.7 keeps tokens 0 and 1 (0.8 >= 0.7); both appear over 200 draws
    assert {sample(logits, 1.0, 0.4, rng) for _ in range(50)} == {0}
    assert {sample(logits, 1.0, 0.7, rng) for _ in range(200)} == {0, 1}
    assert {sample(logits, 1.0, 1.0, rng) for _ in range(2000)} == {0, 1, 2, 3}
    assert sample(np.array([1.0, np.nan, 3.0]), 0.0, 1.0, rng) == 2
    with pytest.raises(ValueError):
        sample(np.array([np.nan, -np.inf]), 1.0, 1.0, rng)


def test_stop_string_cuts_text_and_streams(tok):
    runner = ScriptedRunner.from_texts(tok, {"answer": ["John.\nUser: ignore this"]})
    pieces = []
    res = generate(runner, tok, "answer", PROMPT,
                   GenerationSettings(max_new_tokens=50, stop=("\nUser:",)),
                   on_token=lambda t, s: pieces.append(s))
    assert res.text == "John." and res.stopped_by == "stop"
    assert "".join(pieces) == "John."  # a partial stop string is held back, never streamed


def test_streaming_flushes_held_back_text_at_eos(tok):
    runner = ScriptedRunner.from_texts(tok, {"answer": ["John.\nUs"]})
    pieces = []
    res = generate(runner, tok, "answer", PROMPT,
                   GenerationSettings(max_new_tokens=50, stop=("\nUser:",)),
                   on_token=lambda t, s: pieces.append(s))
    assert res.text == "John.\nUs" and "".join(pieces) == res.text


def test_special_token_stop_derived_from_tokenizer(tok):
    # A reply that emits <|im_end|> stops there even without explicit eos ids.
    im_end = tok.token_to_id("<|im_end|>")
    ids = tok.encode("Rex", add_special_tokens=False).ids + [im_end] + tok.encode(
        "junk", add_special_tokens=False).ids
    runner = ScriptedRunner(tok.get_vocab_size(), tok.token_to_id("<|endoftext|>"),
                            {"answer": [ids]})
    res = generate(runner, tok, "answer", PROMPT,
                   GenerationSettings(max_new_tokens=50, stop=("<|im_end|>",)))
    assert res.text == "Rex" and res.stopped_by == "eos"
    assert im_end in eos_ids_for(tok, ("<|im_end|>",))


def test_every_generation_sets_adapter_and_resets(tok):
    runner = ScriptedRunner.from_texts(tok, {"extract": ["a"], "update": ["b"], "answer": ["c"]})
    for adapter in ["extract", "update", "answer", "extract"]:
        generate(runner, tok, adapter, PROMPT, GenerationSettings(max_new_tokens=5))
    prefills = [i for i, c in enumerate(runner.calls) if c[0] == "prefill"]
    assert len(prefills) == 4
    for i in prefills:
        before = [c[0] for c in runner.calls[:i]]
        last_set = len(before) - 1 - before[::-1].index("set_adapter")
        # set_adapter, then only resets, then the prefill: no token reaches a stale cache
        assert set(before[last_set + 1:]) == {"reset"}
    assert [c[1] for c in runner.calls if c[0] == "set_adapter"] == [
        "extract", "update", "answer", "extract"]
    # the cache never carries tokens across generations: each prefill starts at zero
    assert [a for a, _ in runner.prompts] == ["extract", "update", "answer", "extract"]


def test_max_seq_len_truncates_prompt_left_and_caps_budget(tok, caplog):
    long_prompt = "<|im_start|>user\n" + "word " * 200 + "<|im_end|>\n<|im_start|>assistant\n"
    runner = ScriptedRunner.from_texts(tok, {"answer": ["x" * 300]}, max_seq_len=64)
    with caplog.at_level(logging.WARNING):
        res = generate(runner, tok, "answer", long_prompt, GenerationSettings(max_new_tokens=40))
    assert "truncated from the left" in caplog.text
    assert res.truncated_prompt_tokens > 0 and res.prompt_tokens == 64 - 16
    assert runner.prompts[0][1][0] == tok.token_to_id("<|im_start|>")  # kept the first marker
    assert len(res.token_ids) == 16 and res.stopped_by == "context"
    assert runner.cache_len <= 64  # the runner raises on overflow


def test_short_prompt_uses_full_budget_within_context(tok):
    runner = ScriptedRunner.from_texts(tok, {"answer": ["y" * 300]}, max_seq_len=512)
    res = generate(runner, tok, "answer", PROMPT, GenerationSettings(max_new_tokens=10))
    assert len(res.token_ids) == 10 and res.stopped_by == "length"


@pytest.mark.parametrize("kw", [dict(max_new_tokens=0), dict(temperature=-1), dict(top_p=0),
                                dict(top_p=1.5), dict(stop=("",))])
def test_settings_validation(kw):
    with pytest.raises(ValueError):
        GenerationSettings(**kw)
