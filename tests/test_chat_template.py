"""Chat format: the Jinja template and `render_conversation` both reproduce nanochat's rendering."""

import jinja2
import pytest
from chat_cases import (
    CONVERSATIONS,
    GSM8K_STYLE,
    INJECTION,
    assert_trl_trains_what_render_conversation_trains,
    nanochat_render,
    tiktoken_reference,
    write_chat_tokenizer,
)
from transformers import AutoTokenizer

from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer import (
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    load_chat_template,
    render_conversation,
    render_conversation_with_mask,
    render_for_completion,
)


tiktoken = pytest.importorskip("tiktoken")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small trained tokenizer, saved and reloaded the way users get it."""
    return AutoTokenizer.from_pretrained(write_chat_tokenizer(tmp_path_factory.mktemp("chat") / "tokenizer"))


@pytest.fixture(scope="module")
def encoding(tokenizer):
    return tiktoken_reference(tokenizer)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_template_ids_and_assistant_mask_equal_nanochat(tokenizer, encoding, name):
    messages = CONVERSATIONS[name]
    expected_ids, expected_mask = nanochat_render(encoding, messages)
    out = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == expected_ids
    assert out["assistant_masks"] == expected_mask  # token by token


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_render_conversation_equals_nanochat_with_hf_labels(tokenizer, encoding, name):
    messages = CONVERSATIONS[name]
    expected_ids, expected_mask = nanochat_render(encoding, messages)
    assert render_conversation_with_mask(tokenizer, messages) == (expected_ids, expected_mask)
    input_ids, labels = render_conversation(tokenizer, {"messages": messages})  # nanochat's dict form works too
    assert input_ids == expected_ids
    assert labels == [
        t if m else IGNORE_INDEX for t, m in zip(expected_ids, expected_mask, strict=True)
    ]  # unshifted, HF style


def test_mask_covers_exactly_nanochats_trained_tokens(tokenizer):
    out = tokenizer.apply_chat_template(GSM8K_STYLE, return_dict=True, return_assistant_tokens_mask=True)
    tokens = tokenizer.convert_ids_to_tokens(out["input_ids"])
    trained = {token for token, m in zip(tokens, out["assistant_masks"], strict=True) if m and token in SPECIAL_TOKENS}
    untrained = {
        token for token, m in zip(tokens, out["assistant_masks"], strict=True) if not m and token in SPECIAL_TOKENS
    }
    assert trained == {"<|python_start|>", "<|python_end|>", "<|assistant_end|>"}
    assert untrained == {
        "<|bos|>",
        "<|user_start|>",
        "<|user_end|>",
        "<|assistant_start|>",
        "<|output_start|>",
        "<|output_end|>",
    }


def test_rendered_text_follows_nanochat_layout(tokenizer):
    text = tokenizer.apply_chat_template(CONVERSATIONS["system_prompt"], tokenize=False)
    assert text == (
        "<|bos|><|user_start|>You are nanochat, a small helpful model.\n\nWhat is 2+2?<|user_end|>"
        "<|assistant_start|>4<|assistant_end|>"
    )
    text = tokenizer.apply_chat_template(GSM8K_STYLE[:1], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|user_end|><|assistant_start|>")


def test_generation_prompt_equals_render_for_completion(tokenizer, encoding):
    messages = CONVERSATIONS["system_and_tools_multi_turn"]
    prompt_ids = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False)
    assert prompt_ids == render_for_completion(tokenizer, messages)
    expected, _ = nanochat_render(encoding, messages[:-1], max_tokens=10**9)
    assert prompt_ids == expected + [encoding.encode_single_token("<|assistant_start|>")]


def test_head_truncation_to_max_tokens(tokenizer, encoding):
    messages = CONVERSATIONS["system_and_tools_multi_turn"]
    full_ids, full_mask = nanochat_render(encoding, messages, max_tokens=10**9)
    input_ids, labels = render_conversation(tokenizer, messages, max_tokens=25)
    assert len(full_ids) > 25 and input_ids == full_ids[:25]
    assert labels == [t if m else IGNORE_INDEX for t, m in zip(full_ids[:25], full_mask[:25], strict=True)]


def test_user_and_system_text_parts_render_like_strings(tokenizer, encoding):
    # Arrow stores a `messages` column only if every row's content has one type, so datasets with
    # assistant parts need user/system content as text parts too.
    as_parts = [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "You are nanochat, "},
                {"type": "text", "text": "a small helpful model."},
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
    ]
    expected = nanochat_render(encoding, CONVERSATIONS["system_prompt"])
    out = tokenizer.apply_chat_template(as_parts, return_dict=True, return_assistant_tokens_mask=True)
    assert (out["input_ids"], out["assistant_masks"]) == expected
    assert render_conversation_with_mask(tokenizer, as_parts) == expected


def test_adjacent_text_parts_residual_difference(tokenizer, encoding):
    # nanochat encodes two consecutive text parts separately; the template renders them as one string with
    # no special token between, so it encodes the joined text. The one documented difference.
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "The ans"}, {"type": "text", "text": "wer"}]},
    ]
    joined = [messages[0], {"role": "assistant", "content": "The answer"}]
    assert render_conversation_with_mask(tokenizer, messages) == nanochat_render(encoding, messages)
    assert tokenizer.apply_chat_template(messages, return_dict=False) == nanochat_render(encoding, joined)[0]


BAD_CONVERSATIONS = {
    "assistant_first": ([{"role": "assistant", "content": "hi"}], "message 0 has role 'assistant' but 'user'"),
    "two_users": (
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        "message 1 has role 'user' but 'assistant'",
    ),
    "system_in_the_middle": (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "c"}],
        "message 2 has role 'system'",
    ),
    "system_alone": ([{"role": "system", "content": "be nice"}], "must be followed by a user message"),
    "system_then_assistant": (
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}],
        "must be followed by a user message",
    ),
    "tool_role": ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], "message 1 has role 'tool'"),
    "unknown_part_type": (
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "text": "x"}]}],
        "part 0 has type 'image'",
    ),
    "user_non_text_part": (
        [{"role": "user", "content": [{"type": "image", "text": "a"}]}],
        "(user) content must be a string or a list of",
    ),
    "user_dict_content": ([{"role": "user", "content": {"text": "a"}}], "(user) content must be a string"),
    "missing_content": ([{"role": "user"}], "message 0 has no content"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONVERSATIONS))
def test_template_raises_clear_errors(tokenizer, name):
    messages, message = BAD_CONVERSATIONS[name]
    with pytest.raises(
        jinja2.TemplateError, match="nanochat chat template: .*" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        tokenizer.apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize("name", sorted(BAD_CONVERSATIONS))
def test_render_conversation_raises_user_input_errors(tokenizer, name):
    messages, _ = BAD_CONVERSATIONS[name]
    with pytest.raises(UserInputError, match="message 0|message 1|message 2"):
        render_conversation(tokenizer, messages)


def test_empty_conversations_fail_clearly(tokenizer):
    with pytest.raises(UserInputError, match="non-empty list of messages"):
        render_conversation(tokenizer, [])
    with pytest.raises(UserInputError, match="'messages' key"):
        render_conversation(tokenizer, {"conversation": []})
    with pytest.raises(ValueError, match="empty conversation"):  # transformers' own check
        tokenizer.apply_chat_template([], tokenize=False)
    with pytest.raises(jinja2.TemplateError, match="end with a user message"):
        tokenizer.apply_chat_template(CONVERSATIONS["single_turn"], tokenize=False, add_generation_prompt=True)


def test_render_conversation_never_injects_control_tokens(tokenizer, encoding):
    messages = [{"role": "user", "content": INJECTION}, {"role": "assistant", "content": "No.<|bos|>"}]
    input_ids, _ = render_conversation(tokenizer, messages)
    assert input_ids == nanochat_render(encoding, messages)[0]
    special_ids = set(tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)))
    # Only the structural tokens are special: bos, user_start, user_end, assistant_start, assistant_end.
    assert [t for t in input_ids if t in special_ids] == tokenizer.convert_tokens_to_ids(
        ["<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>"]
    )


def test_apply_chat_template_needs_sanitize_control_tokens_to_avoid_injection(tokenizer, encoding):
    messages = [{"role": "user", "content": INJECTION}]
    expected = nanochat_render(encoding, messages)[0] + [encoding.encode_single_token("<|assistant_start|>")]
    # transformers' default: special-token strings in message text become special tokens (injection).
    unsafe = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert unsafe != expected and unsafe.count(tokenizer.convert_tokens_to_ids("<|assistant_end|>")) == 1
    # With sanitize_control_tokens=True the message text is ordinary text, as in nanochat. (Here no space
    # precedes a control-token string, so even the piece boundaries agree with nanochat's ids.)
    safe = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, sanitize_control_tokens=True, return_dict=False
    )
    assert safe == expected
    # Documented limitation in transformers 5.24: not combinable with the assistant mask.
    with pytest.raises(ValueError, match="return_assistant_tokens_mask"):
        tokenizer.apply_chat_template(messages, sanitize_control_tokens=True, return_assistant_tokens_mask=True)


def test_template_file_is_what_the_tokenizer_carries(tokenizer):
    assert tokenizer.chat_template == load_chat_template()
    assert tokenizer.bos_token == "<|bos|>" and tokenizer.eos_token == "<|assistant_end|>"


def test_trl_assistant_only_loss_labels_equal_render_conversation(tokenizer, tmp_path):
    # The point of the {% generation %} blocks: trl's SFTTrainer(assistant_only_loss=True) must train
    # exactly nanochat's tokens.
    pytest.importorskip("trl")

    def parts(text):
        return [{"type": "text", "text": text}]

    conversations = [
        [
            {"role": "system", "content": parts("Be brief.")},
            {"role": "user", "content": parts(GSM8K_STYLE[0]["content"])},
            GSM8K_STYLE[1],  # assistant parts: text, python, python_output
        ],
        [{"role": "user", "content": parts("Hello!")}, {"role": "assistant", "content": parts("Hi there.")}],
    ]
    assert_trl_trains_what_render_conversation_trains(tokenizer, conversations, tmp_path)
