"""Shared-prefix training and evaluation give what the plain paths give: the same loss and
gradients (the head computed once per batch, with gradients), the same logits from a kept head KV."""
import random

import pytest
import torch

from memlora.distill.evaluate import ModuleRunner
from memlora.distill.records import TeacherRecord
from memlora.distill.shared_prefix import shared_prefix_len
from memlora.distill.train_data import Example
from memlora.distill.train_loop import _loss
from memlora.memory import Op

REC = TeacherRecord("r", Op.ANSWER, {"memories": [], "question": "q?"}, "a")


def _examples(n=5, head=40, seed=0):
    """``n`` examples sharing ``head`` ids, then different prompt tails and targets of different lengths."""
    rng = random.Random(seed)
    common = [rng.randrange(5, 1000) for _ in range(head)]
    out = []
    for i in range(n):
        tail = [rng.randrange(5, 1000) for _ in range(3 + 2 * i)]
        target = [rng.randrange(5, 1000) for _ in range(4 + (i * 3) % 7)]
        out.append(Example(REC, common + tail + target, head + len(tail)))
    return out


def _lora(model_dir, attn: str):
    """The same seeded LoRA model each call, with a non-zero B (the adapter changes the head's KV too)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                 "o_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def lora_model(preset_dir):
    return _lora(preset_dir("tiny-qwen2")[0], "eager")


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


def test_shared_prefix_len_stops_before_the_last_prompt_token():
    exs = _examples(head=40)
    assert shared_prefix_len(exs) == 40
    short = Example(REC, exs[0].ids[:30] + [1, 2], 31)  # prompt of 31 tokens: at most 30 shared
    assert shared_prefix_len(exs + [short]) == 30
    assert shared_prefix_len(exs[:1]) == exs[0].n_prompt - 1 and shared_prefix_len([]) == 0


def test_shared_prefix_loss_and_gradients_equal_the_plain_ones(lora_model):
    exs = _examples()
    head = shared_prefix_len(exs)
    results = []
    for h in (0, head):
        lora_model.zero_grad()
        loss, n = _loss(lora_model, exs, 0, "cpu", head=h)
        loss.backward()
        results.append((float(loss.detach()), n, _grads(lora_model)))
    (l0, n0, g0), (l1, n1, g1) = results
    assert n0 == n1 == sum(len(e.ids) - e.n_prompt for e in exs)
    assert abs(l0 - l1) < 1e-5 and torch.allclose(g0, g1, atol=1e-6, rtol=1e-4)
    assert float(g0.abs().max()) > 1e-4  # gradients reach the adapter at all
    # Training runs SDPA (export's reference is eager): the same loss through the shared head.
    sdpa, _ = _loss(_lora(lora_model.base_model.model.name_or_path, "sdpa"), exs, 0, "cpu", head=head)
    assert abs(float(sdpa.detach()) - l0) < 1e-5
    # Negative control: a head the rows do not really share (row 2 differs at id 0) changes the loss.
    lora_model.zero_grad()
    wrong, _ = _loss(lora_model, [exs[0], Example(REC, [7] + exs[1].ids[1:], exs[1].n_prompt)], 0, "cpu", head=head)
    plain, _ = _loss(lora_model, [exs[0], Example(REC, [7] + exs[1].ids[1:], exs[1].n_prompt)], 0, "cpu")
    assert abs(float(wrong) - float(plain)) > 1e-4


def test_module_runner_prefix_reuse_gives_full_prefill_logits(lora_model):
    exs = _examples(n=3)
    runner = ModuleRunner(lora_model.eval())
    reused = []
    for e in exs:
        runner.reset()
        full = runner.prefill(e.ids)
        rows, r = runner.prefill_with_prefix(e.ids, 40)
        reused.append(r)
        assert rows.shape[0] == len(e.ids) - 40
        assert abs(rows - full[40:]).max() < 1e-4
        step = runner.decode(5)  # the restored cache goes on decoding
        runner.reset()
        runner.prefill(e.ids)
        assert abs(step - runner.decode(5)).max() < 1e-4
    assert reused == [0, 40, 40]
    lora_model.train()
