"""RL problems: GSM8K-style rows, local files, the embedded arithmetic set, and rows that are refused."""

import json

import pytest

from nanochat_hf.chat.calculator import evaluate, format_result
from nanochat_hf.errors import UserInputError
from nanochat_hf.training.rl_data import load_problems, reference_answer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_gsm8k_rows_become_prompts_and_final_answers(tmp_path):
    rows = [
        {"question": "How many?", "answer": "Some <<2*3=6>>6 steps.\n#### 1,234"},
        {"question": "And now?", "answer": "42"},
        {"question": "Negative?", "answer": -3},
    ]
    problems = load_problems(str(write_jsonl(tmp_path / "gsm8k.jsonl", rows)))
    assert problems[0] == {"prompt": [{"role": "user", "content": "How many?"}], "answer": "1234"}
    assert [problems[i]["answer"] for i in (1, 2)] == ["42", "-3"]


def test_held_out_rows_are_nanochats_order_and_slice(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(20)]
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    held_out = load_problems(str(path), size=5, held_out=True)
    answers = [row["answer"] for row in held_out]
    assert len(answers) == 5 and answers != ["0", "1", "2", "3", "4"]  # shuffled with seed 42, then the first 5
    assert answers == [row["answer"] for row in load_problems(str(path), size=5, held_out=True)]


def test_embedded_arithmetic_answers_are_the_calculators_and_held_out_is_disjoint():
    train = load_problems("arithmetic", size=50, synthetic_size=50)
    held_out = load_problems("arithmetic", size=20, held_out=True, synthetic_size=50)
    assert len(train) == 50 and len(held_out) == 20
    assert not {row["prompt"][0]["content"] for row in train} & {row["prompt"][0]["content"] for row in held_out}
    for row in train:
        assert reference_answer(row["answer"]) == row["answer"]
        assert format_result(evaluate(row["answer"])) == row["answer"]  # a number as the calculator writes it


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q"}, "row 1: no 'answer'"),
        ({"question": "q", "answer": "no number here"}, "row 1: the answer 'no number here' has no final number"),
        ({"answer": "#### 3"}, "row 1: no 'question'"),
    ],
)
def test_a_row_without_an_answer_is_refused_with_its_number(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "fine", "answer": "#### 1"}, row])
    with pytest.raises(UserInputError, match=message):
        load_problems(str(path))


def test_sources_that_cannot_be_loaded_are_named(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserInputError, match="expected gsm8k, arithmetic, a Hub dataset id"):
        load_problems("gsm9k")
    # Offline (the test suite never reaches the network): the real Hub loader's failure, with the way out.
    with pytest.raises(UserInputError, match="openai/gsm8k/main split 'train'.*--dataset arithmetic"):
        load_problems("gsm8k")
