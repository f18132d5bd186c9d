"""Is this a nanochat chat tokenizer? Checked once, before any data is rendered or any model is loaded."""

from ..errors import UserInputError
from ..tokenizer import render_conversation_with_mask


# Exercises every piece of the format: system merge, user turn, text, tool call and tool output parts.
PROBE_CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+3?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me compute "},
            {"type": "python", "text": "2+3"},
            {"type": "python_output", "text": "5"},
            {"type": "text", "text": "5.\n#### 5"},
        ],
    },
]

FIX_HINT = (
    "use a tokenizer written by nanochat-hf (recipes/train_tokenizer.py or `nanochat-hf convert-tokenizer`), or "
    "set `tokenizer.chat_template = nanochat_hf.tokenizer.load_chat_template()` and save it"
)


def check_chat_tokenizer(tokenizer, where: str = "tokenizer", require_template: bool = True) -> None:
    """Raise UserInputError unless `tokenizer` has nanochat's special tokens and (if required) chat template.

    The template is checked by what it does, not by its text: it must render the probe conversation to
    exactly the ids of `render_conversation`, with the same assistant mask (its `{% generation %}` blocks).
    """
    try:
        ids, mask = render_conversation_with_mask(tokenizer, PROBE_CONVERSATION)
    except UserInputError as err:
        raise UserInputError(f"{where}: {err}") from None
    if not require_template:
        return
    if not getattr(tokenizer, "chat_template", None):
        raise UserInputError(f"{where}: has no chat template; nanochat's chat format is needed ({FIX_HINT})")
    try:
        rendered = tokenizer.apply_chat_template(
            PROBE_CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as err:  # a foreign template can fail in any way on nanochat's list-of-parts content
        raise UserInputError(
            f"{where}: its chat template is not nanochat's (rendering a nanochat conversation failed: {err}; {FIX_HINT})"
        ) from None
    if list(rendered["input_ids"]) != ids:
        raise UserInputError(
            f"{where}: its chat template is not nanochat's (it renders a conversation differently from "
            f"nanochat's format; {FIX_HINT})"
        )
    if list(rendered.get("assistant_masks") or []) != mask:
        raise UserInputError(
            f"{where}: its chat template does not mark nanochat's trained tokens with {{% generation %}} blocks "
            f"({FIX_HINT})"
        )
