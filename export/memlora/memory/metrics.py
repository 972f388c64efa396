"""LoCoMo-style answer metrics: normalisation, token F1 and BLEU-1.

Normalisation follows the SQuAD / LoCoMo evaluation scripts: lower case, drop punctuation, drop
the articles a/an/the, collapse whitespace. Token F1 is the SQuAD bag-of-tokens F1. BLEU-1 is
clipped unigram precision times the brevity penalty ``exp(1 - r/c)`` when the candidate is
shorter than the reference (``c < r``), as ``nltk``'s ``sentence_bleu(weights=(1, 0, 0, 0))``
computes for one reference. No stemming (the LoCoMo script stems with Porter; that needs nltk).
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, strip punctuation and articles, collapse whitespace."""
    text = str(text).lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """The normalised tokens of ``text``."""
    return normalize_answer(text).split()


def f1_score(prediction: str, gold: str) -> float:
    """SQuAD token F1 between normalised ``prediction`` and ``gold``.

    Two empty answers score 1.0; one empty answer scores 0.0.
    """
    pred, ref = tokens(prediction), tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, gold: str) -> float:
    """Sentence BLEU-1 (clipped unigram precision x brevity penalty) on normalised tokens."""
    pred, ref = tokens(prediction), tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    clipped = sum((Counter(pred) & Counter(ref)).values())
    precision = clipped / len(pred)
    bp = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return bp * precision


@dataclass(frozen=True)
class Scores:
    f1: float
    bleu1: float


def score(prediction: str, gold: str) -> Scores:
    """Both metrics for one answer."""
    return Scores(f1_score(prediction, gold), bleu1(prediction, gold))
