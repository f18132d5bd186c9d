"""`ChatEngine.generate_batch`: several conversations decoded together in one loop, each row with its own tool loop.

The model is a real tiny NanoChatHFForCausalLM (random weights). Where a row must write a tool call, a logits
processor leaves only the scripted token possible for that row (the engine's forcing and the tool run for real).
"""

import pytest
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from transformers import LogitsProcessor, LogitsProcessorList

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.engine import ChatEngine
from nanochat_hf.errors import UserInputError


class ScriptedRows(LogitsProcessor):
    """Row r's i-th step is forced to scripts[r][i] (None, or past the script: the model is free)."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.step = 0

    def __call__(self, input_ids, scores):
        for row, script in enumerate(self.scripts):
            if self.step < len(script) and script[self.step] is not None:
                forced = torch.full_like(scores[row], -float("inf"))
                forced[script[self.step]] = 0.0
                scores[row] = forced
        self.step += 1
        return scores


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("batch") / "model", random_weights=True)
    return ChatEngine(NanoChatHFForCausalLM.from_pretrained(folder).eval(), chat_tokenizer())


def special(engine, name):
    return engine.tokenizer.convert_tokens_to_ids(f"<|{name}|>")


CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "What is the capital of France? Answer in one word please."}],
    [
        {"role": "user", "content": "count to three"},
        {"role": "assistant", "content": "one two three"},
        {"role": "user", "content": "again"},
    ],
]


def test_greedy_batch_rows_equal_one_conversation_at_a_time(engine):
    """Left padding changes nothing: every row's greedy reply is the one `generate()` gives it alone."""
    replies = engine.generate_batch(CONVERSATIONS, temperature=0, max_new_tokens=[12, 20, 7])
    for messages, budget, reply in zip(CONVERSATIONS, [12, 20, 7], replies, strict=True):
        alone = engine.generate(messages, temperature=0, max_new_tokens=budget)
        assert reply.token_ids == alone.token_ids and reply.parts == alone.parts
        assert reply.finished == alone.finished


def test_each_row_runs_its_own_tool_loop(engine):
    s = lambda name: special(engine, name)  # noqa: E731
    text = engine.encode_text
    call = [s("python_start"), *text("6*7"), s("python_end")]
    wrong = text("x")[0]  # where the engine must force the tool output, the script asks for something else
    output_length = len(text("42")) + 2
    row0 = [*text("So "), *call, *[wrong] * output_length, *text(" done"), s("assistant_end")]
    row1 = [*text("plain answer"), s("assistant_end")]
    events = []
    replies = engine.generate_batch(
        CONVERSATIONS[:2],
        temperature=[0, 0.8],
        max_new_tokens=40,
        logits_processor=LogitsProcessorList([ScriptedRows([row0, row1])]),
        on_event=lambda row, event: events.append((row, event.kind, event.text)),
    )
    assert replies[0].parts == [
        {"type": "text", "text": "So "},
        {"type": "python", "text": "6*7"},
        {"type": "python_output", "text": "42"},
        {"type": "text", "text": " done"},
    ]
    assert replies[0].text == "So <<6*7=42>> done" and replies[0].finished
    forced = [s("output_start"), *text("42"), s("output_end")]
    start = len(text("So ")) + len(call)
    assert replies[0].token_ids[start : start + len(forced)] == forced
    assert replies[0].sampled_mask[start : start + len(forced)] == [0] * len(forced)
    assert replies[1].content == "plain answer" and replies[1].finished
    # Streamed per row, in order; the stream adds up to each reply.
    assert (0, "python_output", "42") in events
    assert "".join(t for r, k, t in events if r == 1) == "plain answer"
    assert "".join(t for r, k, t in events if r == 0 and k == "text") == "So  done"


def test_should_stop_ends_one_row_and_the_others_go_on(engine):
    steps = {"count": 0}

    def should_stop(row):
        steps["count"] += row == 0
        return row == 1 and steps["count"] >= 3

    free = [None] * 30
    no_end = ScriptedRows([free, [engine.encode_text("a")[0]] * 30])
    replies = engine.generate_batch(
        CONVERSATIONS[:2],
        temperature=0,
        max_new_tokens=30,
        should_stop=should_stop,
        logits_processor=LogitsProcessorList([no_end]),
    )
    assert len(replies[1].token_ids) == 3 and not replies[1].finished
    alone = engine.generate(CONVERSATIONS[0], temperature=0, max_new_tokens=30)
    assert replies[0].token_ids == alone.token_ids


def test_per_row_values_must_match_the_conversations(engine):
    with pytest.raises(UserInputError, match="max_new_tokens: 2 values for 3 conversations"):
        engine.generate_batch(CONVERSATIONS, max_new_tokens=[4, 4])
    with pytest.raises(UserInputError, match="temperature must be >= 0"):
        engine.generate_batch(CONVERSATIONS[:1], temperature=-1)
    assert engine.generate_batch([]) == []
