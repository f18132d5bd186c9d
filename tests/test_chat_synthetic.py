"""The embedded synthetic chats: deterministic, valid nanochat conversations, tool outputs the calculator gives."""

import re

import pytest

from nanochat_hf.chat.calculator import run_calculator
from nanochat_hf.chat.datasets import validate_conversation
from nanochat_hf.chat.synthetic import (
    ASSISTANT_NAME,
    SYNTHETIC_TASKS,
    embedded_conversations,
    simple_spelling,
    spelling_bee,
    synthetic_conversations,
)


def parts_of(conversation):
    return conversation["messages"][-1]["content"]


def test_deterministic_for_a_seed_and_independent_of_size():
    assert embedded_conversations(40, seed=0) == embedded_conversations(40, seed=0)
    assert embedded_conversations(40, seed=0) != embedded_conversations(40, seed=1)
    for task in SYNTHETIC_TASKS:
        assert synthetic_conversations(task, 10, seed=3)[:4] == synthetic_conversations(task, 4, seed=3)


def test_all_tasks_are_in_the_embedded_mixture_and_valid():
    conversations = embedded_conversations(200)
    for index, conversation in enumerate(conversations):
        validate_conversation(conversation, f"embedded {index}")
    users = [c["messages"][0]["content"] for c in conversations]
    assert any(u.startswith("Spell the word: ") for u in users)
    assert sum("how many" in u.lower() for u in users) >= 20
    assert any(ASSISTANT_NAME in str(c["messages"][1]["content"]) for c in conversations)
    # Different questions, not one repeated.
    assert len(set(users)) > 150


def test_arithmetic_tool_outputs_are_the_calculators_and_the_answer_is_the_last_one():
    for conversation in synthetic_conversations("arithmetic", 100):
        parts = parts_of(conversation)
        assert [p["type"] for p in parts][:2] in (["text", "python"], ["python", "python_output"])
        outputs = []
        for part, following in zip(parts, parts[1:], strict=False):
            if part["type"] == "python":
                assert following["type"] == "python_output"
                assert run_calculator(part["text"]) == (following["text"], True)
                outputs.append(following["text"])
        assert outputs, "every problem uses the calculator"
        final = re.search(r"#### (-?\d+)$", parts[-1]["text"])
        assert parts[-1]["type"] == "text" and final and final.group(1) == outputs[-1]


def test_arithmetic_answers_solve_the_question():
    """Recompute each answer from the numbers in the question, independently of the generator."""
    for conversation in synthetic_conversations("arithmetic", 60):
        question = conversation["messages"][0]["content"]
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        answer = int(parts_of(conversation)[-1]["text"].rsplit("#### ", 1)[1])
        if "buys" in question:
            start, packs, per_pack = numbers
            assert answer == start + packs * per_pack
        elif "shares" in question:
            total, friends = numbers
            assert answer == total // friends
        elif "per hour" in question:
            rate, hours, spent = numbers
            assert answer == rate * hours - spent
        else:
            rows, cols, extra = numbers
            assert answer == rows * cols + extra


def test_spelling_bee_counts_with_a_count_call():
    for index in range(100):
        parts = parts_of(spelling_bee(index))
        call = next(p for p in parts if p["type"] == "python")["text"]
        word, letter = re.fullmatch(r"'([a-z]+)'\.count\('([a-z])'\)", call).groups()
        count = word.count(letter)
        assert next(p for p in parts if p["type"] == "python_output")["text"] == str(count)
        assert parts[-1]["text"].endswith(f"#### {count}")
        assert f"{word}:{','.join(word)}" in parts[0]["text"]  # the manual spelling before the check
        assert parts[0]["text"].count("hit!") == count


def test_spelling_bee_with_another_word_list():
    for index in range(20):
        parts = parts_of(spelling_bee(index, words=("abracadabra",)))
        assert parts[1]["text"].startswith("'abracadabra'.count(")


def test_simple_spelling_is_nanochats_format():
    conversation = simple_spelling(0, words=("strawberry",))
    assert conversation["messages"] == [
        {"role": "user", "content": "Spell the word: strawberry"},  # nanochat's SimpleSpelling prompt
        {"role": "assistant", "content": "strawberry:s,t,r,a,w,b,e,r,r,y"},
    ]


def test_unknown_task():
    with pytest.raises(KeyError, match="unknown synthetic task"):
        synthetic_conversations("poetry", 3)
