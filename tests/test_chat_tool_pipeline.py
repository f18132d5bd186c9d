"""`NanoChatToolPipeline`: transformers' pipeline() with the calculator tool loop, on a saved tiny chat model."""

import pytest
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from transformers import LogitsProcessor, LogitsProcessorList, pipeline

from nanochat_hf.chat.tool_pipeline import NanoChatToolPipeline
from nanochat_hf.errors import UserInputError


class Scripted(LogitsProcessor):
    """Forces the i-th sampled token of each `generate()` call sequence to script[i] (counted across calls)."""

    def __init__(self, script):
        self.script, self.step = list(script), 0

    def __call__(self, input_ids, scores):
        if self.step >= len(self.script):
            return scores
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.script[self.step]] = 0.0
        self.step += 1
        return forced


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("pipe") / "model", random_weights=True)


def tool_call_script(tokenizer):
    special = lambda name: tokenizer.convert_tokens_to_ids(f"<|{name}|>")  # noqa: E731
    text = lambda t: tokenizer.encode(t, add_special_tokens=False, split_special_tokens=True)  # noqa: E731
    return [
        *text("It is "),
        special("python_start"),
        *text("12*(3+4)"),
        special("python_end"),
        *text("84."),
        special("assistant_end"),
    ]


QUESTION = [{"role": "user", "content": "What is 12*(3+4)?"}]


def test_the_tool_pipeline_runs_the_calculator(model_dir):
    tokenizer = chat_tokenizer()
    chat = pipeline("text-generation", model=str(model_dir), tokenizer=tokenizer, pipeline_class=NanoChatToolPipeline)
    assert isinstance(chat, NanoChatToolPipeline)
    processors = LogitsProcessorList([Scripted(tool_call_script(tokenizer))])
    result = chat(QUESTION, max_new_tokens=40, do_sample=False, logits_processor=processors)
    conversation = result[0]["generated_text"]
    assert conversation[:-1] == QUESTION
    assert conversation[-1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "It is "},
            {"type": "python", "text": "12*(3+4)"},
            {"type": "python_output", "text": "84"},
            {"type": "text", "text": "84."},
        ],
    }
    assert result[0]["text"] == "It is <<12*(3+4)=84>>84."


def test_the_plain_pipeline_does_not_feed_the_tool_output(model_dir):
    """What the tool pipeline fixes: after <|python_end|> the plain pipeline's model never sees the answer."""
    tokenizer = chat_tokenizer()
    plain = pipeline("text-generation", model=str(model_dir), tokenizer=tokenizer)
    processors = LogitsProcessorList([Scripted(tool_call_script(tokenizer))])
    result = plain(QUESTION, max_new_tokens=40, do_sample=False, logits_processor=processors)
    content = result[0]["generated_text"][-1]["content"]
    assert "<|output_start|>" not in content and "84." in content


def test_several_conversations_plain_text_and_refused_options(model_dir):
    tokenizer = chat_tokenizer()
    chat = pipeline("text-generation", model=str(model_dir), tokenizer=tokenizer, pipeline_class=NanoChatToolPipeline)
    second = [{"role": "user", "content": "hello"}]
    results = chat([QUESTION, second], max_new_tokens=5, do_sample=False)
    assert [r[0]["generated_text"][:-1] for r in results] == [QUESTION, second]
    # A plain string is ordinary text generation.
    plain = chat("The capital of France", max_new_tokens=3, do_sample=False)
    assert plain[0]["generated_text"].startswith("The capital of France")
    with pytest.raises(UserInputError, match="return_full_text"):
        chat(QUESTION, return_full_text=False)
