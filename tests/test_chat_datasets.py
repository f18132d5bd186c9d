"""Chat training data: nanochat's converters (GSM8K tool calls, multiple choice), mixtures, rendering with nanochat's mask, errors."""

import json

import pytest
from chat_helpers import chat_tokenizer

from nanochat_hf.chat.datasets import (
    arc_to_conversation,
    gsm8k_answer_parts,
    gsm8k_to_conversation,
    load_mixture,
    mmlu_to_conversation,
    parse_mixture_entry,
    validate_conversation,
)
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer import IGNORE_INDEX, render_conversation_with_mask


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


def test_gsm8k_answer_becomes_tool_call_parts():
    answer = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
    )
    assert gsm8k_answer_parts(answer) == [
        {"type": "text", "text": "Natalia sold 48/2 = "},
        {"type": "python", "text": "48/2"},
        {"type": "python_output", "text": "24"},
        {"type": "text", "text": "24 clips in May.\nNatalia sold 48+24 = "},
        {"type": "python", "text": "48+24"},
        {"type": "python_output", "text": "72"},
        {"type": "text", "text": "72 clips altogether in April and May.\n#### 72"},
    ]
    # Split on the LAST "=", and a span without "=" has an empty output (as nanochat does).
    assert gsm8k_answer_parts("<<a=b=3>><<5*2>>") == [
        {"type": "python", "text": "a=b"},
        {"type": "python_output", "text": "3"},
        {"type": "python", "text": "5*2"},
        {"type": "python_output", "text": ""},
    ]
    conversation = gsm8k_to_conversation({"question": "Q?", "answer": answer})
    assert conversation["messages"][0] == {"role": "user", "content": "Q?"}
    validate_conversation(conversation, "gsm8k")


def test_multiple_choice_is_nanochats_format():
    row = {"train": {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "math"}}
    conversation = mmlu_to_conversation(row)
    assert conversation["messages"] == [
        {
            "role": "user",
            "content": "Multiple Choice question: 2+2?\n- 3=A\n- 4=B\n- 5=C\n- 6=D\n\n"
            "Respond only with the letter of the correct answer.",
        },
        {"role": "assistant", "content": "B"},
    ]
    arc = arc_to_conversation(
        {"question": "Sky?", "choices": {"label": ["1", "2"], "text": ["blue", "green"]}, "answerKey": "1"}
    )
    assert arc["messages"][0]["content"].startswith("Multiple Choice question: Sky?\n- blue=1\n- green=2\n")
    assert arc["messages"][1]["content"] == "1"


@pytest.mark.parametrize(
    "text, source, split, size, repeat",
    [
        ("gsm8k", "gsm8k", None, None, 1),
        ("smoltalk:train[:10000]", "smoltalk", "train[:10000]", None, 1),
        ("identity*2", "identity", None, None, 2),
        ("identity:1000*2", "identity", None, 1000, 2),
        ("spelling_bee:300", "spelling_bee", None, 300, 1),
        ("my-org/chats:test", "my-org/chats", "test", None, 1),
        ("data/chats.jsonl", "data/chats.jsonl", None, None, 1),
    ],
)
def test_parse_mixture_entry(text, source, split, size, repeat):
    entry = parse_mixture_entry(text)
    assert (entry.source, entry.split, entry.size, entry.repeat) == (source, split, size, repeat)


def test_mixture_is_rendered_with_nanochats_mask(tokenizer, tmp_path):
    chats = tmp_path / "chats.jsonl"
    conversation = {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is 6*7? <|assistant_start|>"},
            {
                "role": "assistant",
                "content": [
                    {"type": "python", "text": "6*7"},
                    {"type": "python_output", "text": "42"},
                    {"type": "text", "text": "42"},
                ],
            },
        ]
    }
    chats.write_text(json.dumps(conversation) + "\n" + json.dumps(conversation["messages"]) + "\n")
    dataset = load_mixture([str(chats), "embedded:40", "identity:10*2"], tokenizer, max_length=256)
    assert len(dataset) == 2 + 40 + 20
    ids, mask = render_conversation_with_mask(tokenizer, conversation)
    expected_labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    rows = [row for row in dataset if row["input_ids"] == ids]
    assert len(rows) == 2 and all(row["labels"] == expected_labels for row in rows)
    # What the user typed stays text: the only <|assistant_start|> is the one that opens the reply.
    assert ids.count(tokenizer.convert_tokens_to_ids("<|assistant_start|>")) == 1
    for row in dataset:
        assert len(row["input_ids"]) == len(row["labels"]) <= 256
        assert any(label != IGNORE_INDEX for label in row["labels"])


def test_midtraining_targets_every_token(tokenizer):
    dataset = load_mixture(["embedded:12"], tokenizer, max_length=256, train_on_all_tokens=True)
    assert all(row["labels"] == row["input_ids"] for row in dataset)


def test_mixture_order_follows_the_seed(tokenizer):
    first = load_mixture(["embedded:30"], tokenizer, max_length=128, seed=1)["input_ids"]
    assert first == load_mixture(["embedded:30"], tokenizer, max_length=128, seed=1)["input_ids"]
    assert first != load_mixture(["embedded:30"], tokenizer, max_length=128, seed=2)["input_ids"]


BAD_CONVERSATIONS = [
    ([{"role": "assistant", "content": "Hi"}], "role 'assistant' where 'user' was expected"),
    ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "x"}], "role 'tool'"),
    ([{"role": "user", "content": ""}, {"role": "assistant", "content": "Hi"}], "message 0 .user. has empty content"),
    (
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "   "}],
        "message 1 .assistant. has empty content",
    ),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": []}], "empty content"),
    ([{"role": "user", "content": "Hi"}], "no assistant message"),
    (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "python", "text": " "}, {"type": "text", "text": "x"}]},
        ],
        "empty tool call",
    ),
    (
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "code", "text": "x"}]}],
        "type 'code'",
    ),
    ([{"role": "user"}, {"role": "assistant", "content": "x"}], "has no content"),
]


@pytest.mark.parametrize("messages, message", BAD_CONVERSATIONS)
def test_bad_conversations_are_refused_with_file_and_row(tokenizer, tmp_path, messages, message):
    chats = tmp_path / "chats.jsonl"
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    chats.write_text(json.dumps(good) + "\n" + json.dumps({"messages": messages}) + "\n")
    with pytest.raises(UserInputError, match=rf"chats.jsonl' row 1: .*{message}"):
        load_mixture([str(chats)], tokenizer, max_length=128)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("nonsense", "unknown source 'nonsense'"),
        ("spelling_bee:train", "generated; write its size"),
        ("missing.jsonl", "no such file"),
        ("", "expected entries"),
    ],
)
def test_bad_mixture_entries(tokenizer, entry, message):
    with pytest.raises(UserInputError, match=message):
        load_mixture([entry], tokenizer, max_length=128)


def test_bad_json_line(tokenizer, tmp_path):
    chats = tmp_path / "chats.jsonl"
    chats.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(UserInputError, match="chats.jsonl line 2: not valid JSON"):
        load_mixture([str(chats)], tokenizer, max_length=128)


def test_a_hub_dataset_that_cannot_be_loaded_offline_is_named(tokenizer):
    with pytest.raises(UserInputError, match="cannot load openai/gsm8k/main split 'train'"):
        load_mixture(["gsm8k"], tokenizer, max_length=128)
