"""Training loss with the template's constant head computed once per batch, not once per example.

Every prompt of one operation starts with the same long template head (about 1,450 of an extract
prompt's ~1,550 tokens on the tiny preset), so a batch of ``B`` examples spends most of its
forward pass recomputing the same thing ``B`` times. Here the head runs once (batch 1, *with*
gradients: the LoRA adapter changes the head's KV too, so it cannot be cached across steps),
its KV is broadcast to the batch, and only each example's rest runs per example, at positions
after the head. Attention, positions and the loss are those of the full sequences, so the
loss equals :func:`~memlora.distill.train_loop._loss` on the same batch up to float rounding
(``tests/test_distill_train.py`` checks loss and gradients), and the gradient w.r.t. the head
is the sum over the batch, as it is in the plain loss.

The head is cut on token ids (the longest common run of every example's prompt ids), never on
text, so each example is still exactly the runtime's tokenisation of its prompt; at least one
prompt token stays in each example's rest, where the logits for the first target token come from.
"""
from __future__ import annotations

from typing import Sequence

from .train_data import IGNORE, Example


def shared_prefix_len(examples: Sequence[Example]) -> int:
    """How many leading prompt ids all ``examples`` share (at most the shortest prompt minus one)."""
    if not examples:
        return 0
    first = examples[0].ids
    n = min(e.n_prompt for e in examples) - 1
    for e in examples[1:]:
        k = 0
        while k < n and e.ids[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _rest_batch(examples: Sequence[Example], head: int, pad_id: int, device):
    """Ids, mask and labels of each example's part after the head, padded on the right."""
    import torch

    n = max(len(e.ids) for e in examples) - head
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, e in enumerate(examples):
        t = torch.tensor(e.ids[head:])
        ids[i, : len(t)] = t
        mask[i, : len(t)] = 1
        start = e.n_prompt - head
        labels[i, start: len(t)] = t[start:]
    return ids.to(device), mask.to(device), labels.to(device)


def _broadcast_cache(cache, batch: int):
    """A new cache holding ``cache``'s layers expanded (views, so gradients sum) to ``batch`` rows."""
    from transformers import DynamicCache

    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return out


def shared_prefix_loss(model, examples: Sequence[Example], head: int, pad_id: int, device):
    """Mean cross-entropy over the target tokens of ``examples`` whose first ``head`` ids are shared.

    Returns ``(loss, target tokens)`` like the plain loss."""
    import torch
    import torch.nn.functional as F

    prefix = torch.tensor([examples[0].ids[:head]], dtype=torch.long, device=device)
    out = model(input_ids=prefix, use_cache=True)
    ids, mask, labels = _rest_batch(examples, head, pad_id, device)
    b = len(examples)
    full_mask = torch.cat([torch.ones((b, head), dtype=mask.dtype, device=device), mask], dim=1)
    positions = torch.arange(head, head + ids.shape[1], device=device).unsqueeze(0).expand(b, -1)
    logits = model(input_ids=ids, attention_mask=full_mask, position_ids=positions,
                   past_key_values=_broadcast_cache(out.past_key_values, b), use_cache=True).logits.float()
    # The rest's first token is a prompt token (see shared_prefix_len), so targets start at 1 or later.
    tgt = labels[:, 1:]
    logits = logits[:, :-1]
    n = int((tgt != IGNORE).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE,
                           reduction="sum") / max(n, 1)
    return loss, n
