"""Chat generation with nanochat's calculator tool loop, on top of `model.generate()`.

nanochat's engine samples token by token and keeps, per row, a queue of forced tokens and an
"in python block" flag. Here `generate()` does the sampling (with its KV cache, temperature and top-k)
and stops at three tokens: `<|assistant_end|>` and `<|bos|>` end the reply (as in nanochat), and
`<|python_end|>` ends a tool call. The engine then evaluates the expression written since
`<|python_start|>` with the safe calculator, appends `<|output_start|>`, the result encoded as ordinary
text (a result that spells a special token stays text) and `<|output_end|>` - the tokens nanochat forces
- and calls `generate()` again with the same cache, so the prompt is never recomputed. A malformed tool
call is never an exception: its error message becomes the tool output, and the model continues.

Tokens are streamed as they are sampled (`on_event`), split into the parts of nanochat's assistant
content: text, python (the tool call), python_output (the tool's answer). The finished reply is those
parts, ready to be appended to the conversation for the next turn.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.generation.streamers import BaseStreamer

from ..errors import UserInputError
from ..loading import open_model, open_tokenizer
from ..tokenizer import normalize_conversation, render_conversation_with_mask
from ..tokenizer.special_tokens import (
    ASSISTANT_END,
    ASSISTANT_START,
    BOS,
    OUTPUT_END,
    OUTPUT_START,
    PYTHON_END,
    PYTHON_START,
)
from .adapters import load_adapter_model, resolve_adapter_base
from .calculator import run_calculator
from .generation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K
from .tokenizer_check import check_chat_tokenizer


@dataclass
class ChatEvent:
    """A piece of the reply as it is generated: `kind` is "text", "python" or "python_output".

    A tool call starts with an event ("python", "") so a front end can open it even before any text.
    """

    kind: str
    text: str


@dataclass
class AssistantReply:
    parts: list[dict] = field(default_factory=list)  # nanochat's assistant content parts
    token_ids: list[int] = field(default_factory=list)  # sampled and forced, without the final stop token
    sampled_mask: list[int] = field(default_factory=list)  # 1 = sampled by the model, 0 = forced (tool output)
    finished: bool = False  # True when the model ended its turn; False when max_new_tokens ran out

    @property
    def content(self):
        """The assistant message content: a string for plain text, else the list of parts."""
        if all(part["type"] == "text" for part in self.parts):
            return "".join(part["text"] for part in self.parts)
        return [dict(part) for part in self.parts]

    @property
    def text(self) -> str:
        """Readable text, tool calls written GSM8K-style as <<expression=result>>."""
        pieces = []
        for part in self.parts:
            if part["type"] == "python":
                pieces.append(f"<<{part['text']}")
            elif part["type"] == "python_output":
                pieces.append(f"={part['text']}>>")
            else:
                pieces.append(part["text"])
        return "".join(pieces)


class _CallbackStreamer(BaseStreamer):
    """Hands every newly sampled token to `on_token` (generate's first `put` is the input: skipped)."""

    def __init__(self, on_token: Callable[[int], None]):
        self.on_token = on_token
        self.input_seen = False

    def put(self, value):
        if not self.input_seen:
            self.input_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.on_token(token)

    def end(self):
        pass


class _ReplyBuilder:
    """nanochat's per-row tool state machine over the streamed tokens, building parts and events."""

    def __init__(self, tokenizer, special: dict[str, int], on_event):
        self.tokenizer = tokenizer
        self.special = special
        self.on_event = on_event or (lambda event: None)
        self.reply = AssistantReply()
        self.kind = "text"
        self.part_tokens: list[int] = []
        self.emitted = 0

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _flush(self) -> None:
        """Close the current part (if it has content) into `reply.parts`."""
        text = self._decode(self.part_tokens)
        if len(text) > self.emitted:  # characters held back while a UTF-8 sequence was incomplete
            self.on_event(ChatEvent(self.kind, text[self.emitted :]))
        if text or self.kind == "python":
            self.reply.parts.append({"type": self.kind, "text": text})
        self.part_tokens, self.emitted = [], 0

    def sampled(self, token: int) -> None:
        self.reply.token_ids.append(token)
        self.reply.sampled_mask.append(1)
        if token in (self.special[ASSISTANT_END], self.special[BOS]):
            return
        if token == self.special[PYTHON_START]:
            self._flush()
            self.kind = "python"
            self.on_event(ChatEvent("python", ""))
            return
        if token == self.special[PYTHON_END] and self.kind == "python":
            return  # the engine closes the call when generate() stops on it
        self.part_tokens.append(token)
        text = self._decode(self.part_tokens)
        if not text.endswith("\ufffd") and len(text) > self.emitted:  # hold back a half-decoded character
            self.on_event(ChatEvent(self.kind, text[self.emitted :]))
            self.emitted = len(text)

    def tool_call(self) -> str:
        """Close the tool call; returns its expression."""
        expression = self._decode(self.part_tokens)
        self._flush()
        self.kind = "text"
        return expression

    def tool_output(self, text: str, tokens: list[int]) -> None:
        self.reply.token_ids.extend(tokens)
        self.reply.sampled_mask.extend([0] * len(tokens))
        self.reply.parts.append({"type": "python_output", "text": text})
        self.on_event(ChatEvent("python_output", text))

    def finish(self, finished: bool) -> AssistantReply:
        if self.kind == "python":  # ran out of tokens inside a tool call
            self.tool_call()
        else:
            self._flush()
        if finished:  # nanochat's engine returns the tokens without the terminal stop token
            self.reply.token_ids.pop()
            self.reply.sampled_mask.pop()
        self.reply.finished = finished
        return self.reply


class ChatEngine:
    """Multi-turn chat with a nanochat model: prompt rendering, sampling, the calculator tool loop.

    Args:
        model: a causal LM with `generate()` (NanoChatHFForCausalLM, a peft model over one, ...).
        tokenizer: nanochat's tokenizer (its special tokens are checked).
        tool: expression -> (output text, ok); the safe calculator by default.
    """

    def __init__(self, model, tokenizer, tool: Callable[[str], tuple[str, bool]] = run_calculator):
        check_chat_tokenizer(tokenizer, require_template=False)
        self.model = model
        self.tokenizer = tokenizer
        self.tool = tool
        self.special = {
            token: tokenizer.convert_tokens_to_ids(token)
            for token in (BOS, ASSISTANT_START, ASSISTANT_END, PYTHON_START, PYTHON_END, OUTPUT_START, OUTPUT_END)
        }

    def encode_text(self, text: str) -> list[int]:
        """Ordinary text: special-token strings inside it are not matched (nanochat's encode_ordinary)."""
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True) if text else []

    def prompt_ids(self, messages) -> list[int]:
        """The conversation so far (ending with a user message) followed by `<|assistant_start|>`."""
        turns = normalize_conversation(messages)
        if turns[-1][0] != "user":
            raise UserInputError("conversation: the last message must be the user's, to reply to")
        ids, _ = render_conversation_with_mask(self.tokenizer, messages, max_tokens=10**12)
        return ids + [self.special[ASSISTANT_START]]

    @torch.no_grad()
    def generate(
        self,
        messages,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = DEFAULT_TOP_K,
        seed: int | None = None,
        on_event: Callable[[ChatEvent], None] | None = None,
        **generate_kwargs,
    ) -> AssistantReply:
        """Generate the assistant's reply to `messages`; `on_event` receives it piece by piece.

        `max_new_tokens` counts sampled and forced (tool output) tokens, as in nanochat. Extra keyword
        arguments go to `model.generate()` (e.g. `logits_processor`).
        """
        if max_new_tokens <= 0:
            raise UserInputError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if temperature < 0:
            raise UserInputError(f"temperature must be >= 0, got {temperature}")
        ids = self.prompt_ids(messages)
        context = getattr(self.model.config, "sequence_len", None) or getattr(
            self.model.config, "max_position_embeddings", None
        )
        if context is not None and len(ids) >= context:
            raise UserInputError(
                f"the conversation is {len(ids)} tokens, the model's context is {context}; start a new conversation"
            )
        budget = max_new_tokens if context is None else min(max_new_tokens, context - len(ids))
        if seed is not None:
            torch.manual_seed(seed)
        generation_config = self._generation_config(temperature, top_k)
        device = next(self.model.parameters()).device
        builder = _ReplyBuilder(self.tokenizer, self.special, on_event)
        stop_tokens = (self.special[ASSISTANT_END], self.special[BOS])
        sequence = torch.tensor([ids], device=device)
        cache = None
        produced = 0
        while produced < budget:
            generation_config.max_new_tokens = budget - produced
            output = self.model.generate(
                input_ids=sequence,
                attention_mask=torch.ones_like(sequence),  # BOS is also the pad token: never infer a mask
                cache=cache,
                generation_config=generation_config,
                streamer=_CallbackStreamer(builder.sampled),
                **generate_kwargs,
            )
            new_tokens = output.sequences[0, sequence.shape[1] :].tolist()
            sequence, cache = output.sequences, output.cache
            produced += len(new_tokens)
            last = new_tokens[-1] if new_tokens else None
            if last in stop_tokens:
                return builder.finish(finished=True)
            if last != self.special[PYTHON_END] or builder.kind != "python":
                if last == self.special[PYTHON_END]:
                    continue  # a stray <|python_end|> outside a tool call is just a token
                break  # max_new_tokens reached
            result, _ = self.tool(builder.tool_call())
            forced = [self.special[OUTPUT_START], *self.encode_text(result), self.special[OUTPUT_END]]
            builder.tool_output(result, forced)
            produced += len(forced)
            sequence = torch.cat([sequence, torch.tensor([forced], device=device)], dim=1)
        return builder.finish(finished=False)

    def _generation_config(self, temperature: float, top_k: int | None):
        config = copy.deepcopy(self.model.generation_config)
        config.eos_token_id = [self.special[ASSISTANT_END], self.special[BOS], self.special[PYTHON_END]]
        config.pad_token_id = self.special[BOS]
        config.bos_token_id = self.special[BOS]
        if temperature == 0:  # nanochat: temperature 0 is argmax
            config.do_sample, config.temperature, config.top_k = False, 1.0, 50  # the neutral values: no warning
        else:
            config.do_sample, config.temperature, config.top_k = True, temperature, (top_k or 0)  # 0: no top-k
        config.top_p = 1.0
        config.max_length = None
        config.return_dict_in_generate = True
        return config


def load_chat_model(location: str, base: str | None = None, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) from a chat model folder / Hub id, or from a LoRA adapter folder on its base."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype in (None, "auto"):
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    folder = Path(location)
    if (folder / "adapter_config.json").is_file():
        model, base = load_adapter_model(folder, base, dtype=torch_dtype)
        tokenizer_source = (
            folder if (folder / "tokenizer_config.json").is_file() else resolve_adapter_base(folder, base)
        )
    else:
        model = open_model(location, what="model", dtype=torch_dtype)
        tokenizer_source = location
    tokenizer = open_tokenizer(str(tokenizer_source), what="tokenizer")
    check_chat_tokenizer(tokenizer, where=f"tokenizer {tokenizer_source}", require_template=False)
    return model.to(device).eval(), tokenizer
