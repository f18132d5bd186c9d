"""RL rewards (nanochat's exact answer, the format reward), pass@k, and the reward-function check."""

import itertools
import math

import pytest

from nanochat_hf.errors import UserInputError
from nanochat_hf.training.rl_rewards import (
    check_reward_functions,
    exact_answer_reward,
    format_reward,
    pass_at_k,
    pass_at_k_values,
)


def chat(text):
    return [{"role": "assistant", "content": text}]


def test_exact_answer_is_nanochats_final_number_with_commas_ignored():
    completions = [
        chat("<<600+634=1234>>So 1,234.\n#### 1,234"),
        chat("#### 1234"),
        chat("#### 1235"),
        chat("The answer is 1234"),  # no `#### `: no reward
        "#### 1234",  # a plain-text completion
        chat([{"type": "text", "text": "#### 12"}, {"type": "text", "text": "34"}]),
    ]
    assert exact_answer_reward(completions, answer=["1234"] * 6) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert exact_answer_reward([chat("#### 3.50")], answer=["3.5"]) == [0.0]  # exact string match, as nanochat


def test_format_reward_pays_for_any_final_number():
    assert format_reward([chat("#### 7"), chat("#### -2.5"), chat("seven"), chat("####7")]) == [1.0, 1.0, 0.0, 0.0]


def test_pass_at_k_is_the_unbiased_estimator():
    # Brute force: the fraction of k-subsets of the samples that hold at least one correct one.
    for n, c in [(8, 0), (8, 1), (8, 3), (4, 4), (6, 2)]:
        samples = [True] * c + [False] * (n - c)
        for k in pass_at_k_values(n):
            subsets = list(itertools.combinations(samples, k))
            assert math.isclose(pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets))
    assert pass_at_k_values(16) == (1, 2, 4, 8, 16) and pass_at_k_values(6) == (1, 2, 4)
    with pytest.raises(ValueError, match="pass@4 needs at least 4 samples"):
        pass_at_k(2, 1, 4)


ROWS = [
    {"prompt": [{"role": "user", "content": "q"}], "answer": "5"},
    {"prompt": [{"role": "user", "content": "r"}], "answer": "6"},
]


def test_the_built_in_rewards_pass_the_check():
    check_reward_functions([exact_answer_reward, format_reward], ROWS)


def test_reward_functions_that_break_the_contract_are_named():
    def short(completions, **kwargs):
        return [0.0]

    def words(completions, **kwargs):
        return ["good"] * len(completions)

    def needs_a_column(completions, solution, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(UserInputError, match="'short' returned 1 rewards for 6 completions"):
        check_reward_functions([exact_answer_reward, short], ROWS)
    with pytest.raises(UserInputError, match="'words' returned 'good'; expected floats"):
        check_reward_functions([words], ROWS)
    with pytest.raises(UserInputError, match="'needs_a_column' fails on probe completions .*answer=..."):
        check_reward_functions([needs_a_column], ROWS)
