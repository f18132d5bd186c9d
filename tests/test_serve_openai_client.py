"""The official `openai` Python client against `nanochat-hf serve` (real server on a loopback port)."""

import openai
import pytest
from chat_helpers import chat_tokenizer
from serve_helpers import MODEL_NAME, ScriptedByPrompt, calculator_script, start_server, tiny_engine

from nanochat_hf.serve.app import ServeLimits


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("serve-openai") / "model")


@pytest.fixture(scope="module")
def client(engine):
    tokenizer = chat_tokenizer()
    script = ScriptedByPrompt(tokenizer, "calculate", calculator_script(tokenizer))
    server = start_server(engine, ServeLimits(max_tokens=100), logits_processor=[script])
    yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    server.stop()


USER = [{"role": "user", "content": "hello there"}]


def test_models_list(client):
    assert [model.id for model in client.models.list()] == [MODEL_NAME]


def test_chat_completion(client, engine):
    completion = client.chat.completions.create(model=MODEL_NAME, messages=USER, temperature=0, max_tokens=12)
    expected = engine.generate(USER, temperature=0, max_new_tokens=12)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == ("stop" if expected.finished else "length")
    assert completion.usage.prompt_tokens == len(engine.prompt_ids(USER))


def test_chat_completion_streaming_with_a_tool_call(client):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "calculate 6 times 7"},
    ]
    stream = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, stream=True, max_tokens=60, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me compute: <<6*7=42>> so the answer is 42."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens > 0


def test_multi_turn_with_the_reply_sent_back(client):
    first = client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=8)
    history = [*USER, {"role": "assistant", "content": first.choices[0].message.content or " "}]
    second = client.chat.completions.create(
        model=MODEL_NAME, messages=[*history, {"role": "user", "content": "and then?"}], max_tokens=8
    )
    assert second.usage.prompt_tokens > first.usage.prompt_tokens


def test_bad_requests_raise_the_clients_errors(client):
    with pytest.raises(openai.BadRequestError, match="at most 100"):
        client.chat.completions.create(model=MODEL_NAME, messages=USER, max_tokens=1000)
    with pytest.raises(openai.BadRequestError, match="roles must alternate"):
        client.chat.completions.create(model=MODEL_NAME, messages=[*USER, *USER])
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=USER)
