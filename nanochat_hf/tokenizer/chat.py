"""nanochat's conversation rendering (`render_conversation`): the chat template, and a direct `(input_ids, labels)` renderer.

Two ways to turn messages into tokens, which agree token for token:

1. `tokenizer.apply_chat_template(messages, ...)` with the Jinja template in `chat_template.jinja` (saved
   with every tokenizer we write). With `return_dict=True, return_assistant_tokens_mask=True` its
   `assistant_masks` is nanochat's training mask, which is what trl's `assistant_only_loss=True` uses.
2. `render_conversation(tokenizer, messages)` below, which encodes every piece of text separately, as
   nanochat does, and returns HF-style labels (-100 on untrained positions, unshifted).

Control-token injection. nanochat always encodes message text as ordinary text: a user who types
`<|assistant_end|>` gets the tokens for the characters "<", "|", "assistant", ..., never the special
token. `render_conversation` guarantees this. So does the `apply_chat_template` of `NanoChatHFTokenizer`
(`nanochat_hf/tokenization_nanochat_hf.py`), the class every tokenizer we write is made with and names in
its `auto_map`: it sanitizes by default, also with `return_assistant_tokens_mask=True`, and gives exactly
nanochat's ids. A folder loaded as transformers' stock class (`AutoTokenizer.from_pretrained(path)` without
`trust_remote_code=True`) does NOT: transformers tokenizes the rendered string and matches special-token
strings anywhere in it, message text included, unless `sanitize_control_tokens=True` is passed (which in
transformers 5.24 cannot be combined with `return_assistant_tokens_mask=True`, and splits the text around
a sanitized token, so its ids can differ from nanochat's at those boundaries).
"""

from functools import lru_cache
from pathlib import Path

from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer.special_tokens import (
    ASSISTANT_END,
    ASSISTANT_START,
    BOS,
    OUTPUT_END,
    OUTPUT_START,
    PYTHON_END,
    PYTHON_START,
    SPECIAL_TOKENS,
    USER_END,
    USER_START,
)


CHAT_TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")
IGNORE_INDEX = -100  # HF / PyTorch cross-entropy ignore index (nanochat itself uses -1)
DEFAULT_MAX_TOKENS = 2048  # nanochat's render_conversation default

ASSISTANT_PART_TYPES = ("text", "python", "python_output")


@lru_cache(maxsize=1)
def load_chat_template() -> str:
    return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def _messages_of(conversation) -> list:
    # nanochat passes {"messages": [...]}; HF and trl pass the list itself. Accept both.
    if isinstance(conversation, dict):
        if "messages" not in conversation:
            raise UserInputError("conversation: expected a list of messages or a dict with a 'messages' key")
        conversation = conversation["messages"]
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise UserInputError("conversation: expected a non-empty list of messages")
    return list(conversation)


def _plain_text(content, index: int, role: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "".join(part["text"] for part in content)
    raise UserInputError(
        f"message {index} ({role}): content must be a string or a list of {{'type': 'text', 'text': str}} parts"
    )


def normalize_conversation(conversation) -> list[tuple[str, object]]:
    """Validate nanochat's conversation rules and return [(role, content)] with the system message merged.

    Rules (nanochat's): roles alternate user, assistant, user, ... starting with user; an optional leading
    system message is merged into the first user message as system + "\\n\\n" + user; user content is a
    string; assistant content is a string or a list of {"type": "text"|"python"|"python_output", "text": str}.
    One extension: user and system content may also be a list of {"type": "text"} parts, joined, because
    a `datasets` column cannot hold strings in some rows and lists in others.
    """
    messages = _messages_of(conversation)
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise UserInputError(f"message {index}: expected a dict with 'role' and 'content'")
        if message.get("content") is None:
            raise UserInputError(f"message {index} ({message['role']}): has no content")

    first = 0
    system_prefix = ""
    if messages[0]["role"] == "system":
        if len(messages) < 2 or messages[1]["role"] != "user":
            raise UserInputError(
                "message 0 (system): must be followed by a user message (nanochat merges it into the first user message)"
            )
        system_prefix = _plain_text(messages[0]["content"], 0, "system") + "\n\n"
        first = 1

    turns = []
    for index in range(first, len(messages)):
        role, content = messages[index]["role"], messages[index]["content"]
        expected = "user" if (index - first) % 2 == 0 else "assistant"
        if role != expected:
            raise UserInputError(
                f"message {index}: role {role!r} where {expected!r} was expected (roles must alternate user, "
                "assistant, user, ...; only the first message may be 'system')"
            )
        if role == "user":
            content = _plain_text(content, index, "user")
            if index == first:
                content = system_prefix + content
        elif isinstance(content, (list, tuple)):
            for part_index, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                    raise UserInputError(f"message {index} part {part_index}: expected a dict with a string 'text'")
                if part.get("type") not in ASSISTANT_PART_TYPES:
                    raise UserInputError(
                        f"message {index} part {part_index}: type {part.get('type')!r}; expected one of {ASSISTANT_PART_TYPES}"
                    )
        elif not isinstance(content, str):
            raise UserInputError(f"message {index} (assistant): content must be a string or a list of parts")
        turns.append((role, content))
    return turns


def _special_token_ids(tokenizer) -> dict[str, int]:
    special = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if (
            token_id is None
            or token_id == tokenizer.unk_token_id
            or tokenizer.convert_ids_to_tokens(token_id) != token
        ):
            raise UserInputError(f"tokenizer has no {token!r} token: it is not a nanochat tokenizer")
        special[token] = token_id
    return special


def render_conversation_with_mask(tokenizer, conversation, max_tokens: int = DEFAULT_MAX_TOKENS):
    """nanochat's `render_conversation`: (ids, mask) with mask 1 on trained tokens, head-truncated to max_tokens."""
    special = _special_token_ids(tokenizer)

    def encode_text(text: str) -> list[int]:
        # Message text is ordinary text: special-token strings inside it are NOT matched (nanochat's
        # `encode_ordinary`). Each piece is encoded on its own, so no merge crosses a piece boundary.
        return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True) if text else []

    ids: list[int] = []
    mask: list[int] = []

    def add(tokens: list[int], trained: int):
        ids.extend(tokens)
        mask.extend([trained] * len(tokens))

    add([special[BOS]], 0)
    for role, content in normalize_conversation(conversation):
        if role == "user":
            add([special[USER_START]], 0)
            add(encode_text(content), 0)
            add([special[USER_END]], 0)
            continue
        add([special[ASSISTANT_START]], 0)
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part["type"] == "text":
                add(encode_text(part["text"]), 1)
            elif part["type"] == "python":
                add([special[PYTHON_START]], 1)
                add(encode_text(part["text"]), 1)
                add([special[PYTHON_END]], 1)
            else:  # python_output: produced by the tool, forced at inference, never trained
                add([special[OUTPUT_START]], 0)
                add(encode_text(part["text"]), 0)
                add([special[OUTPUT_END]], 0)
        add([special[ASSISTANT_END]], 1)
    return ids[:max_tokens], mask[:max_tokens]


def render_conversation(tokenizer, conversation, max_tokens: int = DEFAULT_MAX_TOKENS):
    """Render a conversation to `(input_ids, labels)` for causal-LM training.

    `labels` follow HF conventions: same length as `input_ids`, unshifted (the model shifts), with
    labels[t] = input_ids[t] on the tokens nanochat trains (assistant text, tool calls with their
    delimiters, `<|assistant_end|>`) and -100 elsewhere. Both are truncated to the first `max_tokens`.
    Message text never produces special tokens, whatever it contains.
    """
    ids, mask = render_conversation_with_mask(tokenizer, conversation, max_tokens=max_tokens)
    labels = [token if trained else IGNORE_INDEX for token, trained in zip(ids, mask, strict=True)]
    return ids, labels


def render_for_completion(tokenizer, conversation) -> list[int]:
    """nanochat's `render_for_completion`: drop the final assistant message and append `<|assistant_start|>`.

    The prompt for sampling a reply (RL, chat evaluation). Unlike `render_conversation` nothing is truncated.
    """
    messages = _messages_of(conversation)
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise UserInputError("conversation: the last message must be the assistant reply to complete")
    ids, _ = render_conversation_with_mask(tokenizer, messages[:-1], max_tokens=10**12)
    return ids + [tokenizer.convert_tokens_to_ids(ASSISTANT_START)]
