"""LoCoMo answer metrics against values computed by hand (working in each comment)."""
import math

import pytest

from memlora.memory.metrics import bleu1, f1_score, normalize_answer, score


def test_normalize():
    assert normalize_answer("The Cat's, hat!") == "cats hat"
    assert normalize_answer("  An apple and A pear ") == "apple and pear"
    assert normalize_answer(2022) == "2022"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_f1_and_bleu_longer_prediction():
    # pred -> [cat, sat, on, mat] (4), gold "A cat on a mat" -> [cat, on, mat] (3); common 3.
    # F1: P = 3/4, R = 3/3, F1 = 2 * 0.75 * 1 / 1.75 = 6/7.
    assert f1_score("The cat sat on the mat", "A cat on a mat") == pytest.approx(6 / 7)
    # BLEU-1: c = 4 > r = 3 so BP = 1; clipped precision 3/4.
    assert bleu1("The cat sat on the mat", "A cat on a mat") == pytest.approx(0.75)


def test_f1_and_bleu_short_prediction_brevity_penalty():
    # pred [paris] (1), gold [in, paris, france] (3); common 1.
    # F1: P = 1, R = 1/3, F1 = 2 * (1/3) / (4/3) = 0.5.
    assert f1_score("Paris", "in Paris, France") == pytest.approx(0.5)
    # BLEU-1: precision 1/1, c = 1 < r = 3 so BP = exp(1 - 3/1) = exp(-2) = 0.1353...
    assert bleu1("Paris", "in Paris, France") == pytest.approx(math.exp(-2))


def test_clipping_and_multiset_f1():
    # pred [dog, dog, dog], gold [dog, barks]: clipped overlap min(3, 1) = 1.
    # F1: P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4.  BLEU-1: c = 3 > r = 2, BP = 1, 1/3.
    assert f1_score("dog dog dog", "dog barks") == pytest.approx(0.4)
    assert bleu1("dog dog dog", "dog barks") == pytest.approx(1 / 3)


def test_equal_length_no_penalty_and_exact_match():
    # c = r = 2: BP = exp(1 - 2/2) = 1; one of two tokens matches -> 0.5.
    assert bleu1("red car", "red bike") == pytest.approx(0.5)
    assert score("The Eiffel Tower.", "eiffel tower").f1 == 1.0
    assert score("The Eiffel Tower.", "eiffel tower").bleu1 == 1.0


def test_empty_answers():
    assert f1_score("", "") == 1.0 and bleu1("the", "a") == 1.0  # both normalise to empty
    assert f1_score("", "x") == 0.0 and f1_score("x", "") == 0.0
    assert bleu1("", "x") == 0.0 and f1_score("x", "y") == 0.0
