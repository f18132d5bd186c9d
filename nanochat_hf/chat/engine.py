"""Chat generation with nanochat's calculator tool loop.

nanochat's engine samples token by token and keeps, per row, a queue of forced tokens and an
"in python block" flag. Here a reply is decoded in the engine's own loop (`decode_loop.py`: a preallocated
KV cache, the logits of the last position only, nanochat's top-k draw), which stops at `<|assistant_end|>`
and `<|bos|>` (as in nanochat). When the model closes a tool call with `<|python_end|>`, the engine
evaluates the expression written since `<|python_start|>` with the safe calculator and feeds
`<|output_start|>`, the result encoded as ordinary text (a result that spells a special token stays text)
and `<|output_end|>` - the tokens nanochat forces - through the model in one forward, on the same cache.
Generation settings the loop does not honour (extra `generate()` arguments, or a model generation config
asking for more, e.g. a repetition penalty) run through `model.generate()` instead, stopping at the same
tokens and at `<|python_end|>`, then calling `generate()` again with the same cache. A malformed tool call
is never an exception: its error message becomes the tool output, and the model continues.

Tokens are streamed as they are sampled (`on_event`), split into the parts of nanochat's assistant
content: text, python (the tool call), python_output (the tool's answer). The finished reply is those
parts, ready to be appended to the conversation for the next turn.
"""

import copy
from collections.abc import Callable
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
from .batching import Row, RowsSampler, RowsWatcher, generate_rows
from .calculator import run_calculator
from .decode_loop import decode, runs_in_decode_loop
from .generation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K
from .processor_chain import ProcessorChain, chain_processors, sampling_warpers
from .reply import AssistantReply, ChatEvent, ReplyBuilder
from .tokenizer_check import check_chat_tokenizer


__all__ = ["AssistantReply", "ChatEngine", "ChatEvent", "load_chat_model"]


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

    def context_length(self) -> int | None:
        """The model's context in tokens (None when its config does not say)."""
        config = self.model.config
        return getattr(config, "sequence_len", None) or getattr(config, "max_position_embeddings", None)

    @torch.no_grad()
    def generate_batch(
        self,
        conversations,
        *,
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        temperature=DEFAULT_TEMPERATURE,
        top_k=DEFAULT_TOP_K,
        seed: int | None = None,
        on_event: Callable[[int, ChatEvent], None] | None = None,
        should_stop: Callable[[int], bool] | None = None,
        on_reply: Callable[[int, AssistantReply], None] | None = None,
        **generate_kwargs,
    ) -> list[AssistantReply]:
        """Replies to several conversations at once, decoded together (left-padded, see `decode_loop.py`), each
        row with its own calculator tool loop.

        `max_new_tokens`, `temperature` and `top_k` are one value for all rows or a list with one per row.
        `on_event(row, event)` streams each row's reply; `should_stop(row)` is asked after every step, and a
        row for which it answers True ends there (its reply so far is returned, `finished=False`) while the
        others go on. `on_reply(row, reply)` receives each row's reply as soon as that row ends. `logits_processor`
        and `stopping_criteria` may be passed as to `model.generate()`; other generation arguments are refused.
        """
        return generate_rows(
            self,
            list(conversations),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
            on_event=on_event,
            should_stop=should_stop,
            on_reply=on_reply,
            **generate_kwargs,
        )

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

        `max_new_tokens` counts sampled and forced (tool output) tokens, as in nanochat. With no extra keyword
        arguments but `logits_processor` (and a model generation config asking for nothing more), the reply is
        decoded in the engine's own loop and equals `generate_batch([messages])` from the same seed; other
        keyword arguments go to `model.generate()`, which then samples with its own warpers.
        """
        if max_new_tokens <= 0:
            raise UserInputError(f"max_new_tokens must be positive, got {max_new_tokens}")
        if temperature < 0:
            raise UserInputError(f"temperature must be >= 0, got {temperature}")
        ids = self.prompt_ids(messages)
        context = self.context_length()
        if context is not None and len(ids) >= context:
            raise UserInputError(
                f"the conversation is {len(ids)} tokens, the model's context is {context}; start a new conversation"
            )
        budget = max_new_tokens if context is None else min(max_new_tokens, context - len(ids))
        if seed is not None:
            torch.manual_seed(seed)
        generation_config = self._generation_config(temperature, top_k)
        builder = ReplyBuilder(self.tokenizer, self.special, on_event)
        if set(generate_kwargs) <= {"logits_processor"} and runs_in_decode_loop(generation_config):
            processors = generate_kwargs.get("logits_processor") or []
            return self._decode_one(ids, budget, temperature, top_k, processors, builder)
        processors = chain_processors(generate_kwargs.pop("logits_processor", []))
        if generation_config.do_sample and all(isinstance(processor, ProcessorChain) for processor in processors):
            # generate() applies the caller's processors, then its temperature and top-k warpers: here the
            # warpers join the caller's processors in one chain (the same operations in the same order).
            processors = [ProcessorChain([*processors, *sampling_warpers(temperature, top_k)])]
            generation_config.temperature, generation_config.top_k = 1.0, 0
        if processors:
            generate_kwargs["logits_processor"] = processors
        device = next(self.model.parameters()).device
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

    def _decode_one(self, ids, budget, temperature, top_k, processors, builder) -> AssistantReply:
        """The reply in the engine's own decoding loop (`decode_loop.py`), as `generate_batch` makes it for one
        conversation: the caller's processors, then nanochat's sampling (argmax at temperature 0, else a draw
        among the top-k logits / temperature: a softmax over k values, not over the vocabulary as generate()'s
        warpers do). A tool's output goes through the model in one forward."""
        processor = ProcessorChain(processors) if processors else None  # validated once, called directly
        row = Row(builder, budget, temperature, top_k)
        watcher = RowsWatcher([row], self.special, self.tool, self.encode_text, None, None, forced_at_once=True)
        choose = RowsSampler([row]).choose
        decode(self.model, [ids], self.special[BOS], budget, choose, watcher.observe, logits_processor=processor)
        return row.close(0, None)

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
