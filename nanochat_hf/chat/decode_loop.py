"""The decoding loop of the batched chat engine: prefill once, then one forward of one token per row per step.

`model.generate()` is general: every step it re-derives its inputs (`prepare_inputs_for_generation`), grows
the attention mask and the token tensor by concatenation, runs its processor and stopping-criteria lists
and checks for finished rows on the device. The chat engine needs little of that - nanochat's own engine is
a plain loop - and on a small model or a CPU that per-step work is a large part of a step. This loop keeps
what the engine needs and allocates nothing per step that it can allocate once:

- the KV cache is a transformers `Cache` of `BufferedLayer`s: each layer's keys and values are written into
  one buffer sized for the prompt plus the budget (as `StaticLayer` does), but the layer hands attention
  only the filled positions (as `DynamicLayer` does), so the model needs no mask over empty slots and no
  step concatenates the whole cache again;
- the tokens so far (for the caller's logits processors, which see `input_ids` as in `generate()`) and the
  attention mask live in buffers of the final width, read as views;
- rows that share one prompt (n samples of a conversation) are prefilled once and the cache is repeated,
  as in nanochat's engine;
- only the last position's logits are computed (`logits_to_keep=1`), under `torch.inference_mode()`;
- the one host sync per step is the read of the chosen tokens, which the tool state machine needs anyway.

`choose(input_ids, scores)` picks every row's next token; `observe(tokens)` feeds them to the rows and
answers whether all rows are done. Both are the batched engine's (`batching.py`).
"""

from collections.abc import Callable

import torch
from transformers import Cache, DynamicLayer


class BufferedLayer(DynamicLayer):
    """A KV cache layer with preallocated room for `capacity` positions; returns only the filled ones.

    Raises ValueError when an update would go past `capacity` (the loop sizes it for prompt + budget).
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self.key_buffer = self.value_buffer = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        *key_lead, _, key_dim = key_states.shape
        *value_lead, _, value_dim = value_states.shape
        self.key_buffer = key_states.new_empty((*key_lead, self.capacity, key_dim))
        self.value_buffer = value_states.new_empty((*value_lead, self.capacity, value_dim))
        self.length = 0
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self.key_buffer[..., : self.length, :]
        self.values = self.value_buffer[..., : self.length, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"BufferedLayer: {end} positions do not fit its capacity of {self.capacity}")
        self.key_buffer[..., start:end, :].copy_(key_states)
        self.value_buffer[..., start:end, :].copy_(value_states)
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError(f"BufferedLayer.crop takes a negative count of positions to drop, got {tokens_to_remove}")
        if self.is_initialized and tokens_to_remove:
            self.length = max(0, self.length + tokens_to_remove)
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
            self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
            self._expose()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._expose()

    def reset(self) -> None:
        self.key_buffer = self.value_buffer = None
        self.length = 0
        super().reset()


# The generation-config settings the decoding loop honours (the chat engine sets them); a config that sets
# anything else (a repetition penalty, beams, a minimum length, ...) is left to `generate()`.
DECODE_LOOP_SETTINGS = frozenset(
    {
        "max_new_tokens",
        "max_length",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "use_cache",
        "return_dict_in_generate",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "output_attentions",
        "output_hidden_states",
        "_from_model_config",
        "transformers_version",
    }
)


def runs_in_decode_loop(generation_config) -> bool:
    """Whether `generation_config` asks for nothing beyond the loop's sampling (temperature, top-k)."""
    settings = generation_config.to_diff_dict()
    return (
        set(settings) <= DECODE_LOOP_SETTINGS
        and generation_config.top_p in (None, 1.0)
        and not generation_config.output_attentions
        and not generation_config.output_hidden_states
    )


def cache_layer_count(config) -> int:
    """The cache layers a model fills: one per block, plus one for generation 2's smear (its previous embedding)."""
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    return layers + (1 if getattr(config, "smear", False) else 0)


def buffered_cache(config, capacity: int) -> Cache:
    return Cache(layers=[BufferedLayer(capacity) for _ in range(cache_layer_count(config))])


@torch.inference_mode()
def decode(
    model,
    prompts: list[list[int]],
    pad_token_id: int,
    max_new_tokens: int,
    choose: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    observe: Callable[[list[int]], bool],
    logits_processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    stopping_criteria: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Generates up to `max_new_tokens` tokens after each (left-padded) prompt; returns all tokens, prompts
    included. Ends early when `observe` answers True (every row done) or `stopping_criteria` holds for every row.

    Per step: logits of the last position (float32) -> `logits_processor(input_ids, scores)` -> `choose`
    -> `observe(tokens as a list)`. With one prompt, `observe` may answer a list of tokens instead: they are
    appended (they count against `max_new_tokens`) and go through the model in one forward with the chosen token.
    """
    device = next(model.parameters()).device
    batch, width = len(prompts), max(len(ids) for ids in prompts)
    total = width + max_new_tokens
    tokens = torch.full((batch, total), pad_token_id, dtype=torch.long, device=device)
    tokens[:, :width] = torch.tensor([[pad_token_id] * (width - len(ids)) + ids for ids in prompts], device=device)
    padded = any(len(ids) != width for ids in prompts)
    mask = positions = None
    if padded:
        # The mask grows with the sequence, so it is the view mask[:, :length] of a full-width buffer.
        mask = torch.ones((batch, total), dtype=torch.long, device=device)
        for row, ids in enumerate(prompts):
            mask[row, : width - len(ids)] = 0
        positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    cache = buffered_cache(model.config, total)

    shared = batch > 1 and all(ids == prompts[0] for ids in prompts)  # one prompt for every row: prefill it once
    prefill_rows = slice(0, 1) if shared else slice(None)
    logits = model(
        input_ids=tokens[prefill_rows, :width],
        attention_mask=None if mask is None else mask[prefill_rows, :width],
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    if shared:
        cache.batch_repeat_interleave(batch)
        logits = logits.expand(batch, -1).contiguous()  # processors may write into the scores in place
    length = width
    while True:
        scores = logits.float()
        seen = tokens[:, :length]
        if logits_processor is not None:
            scores = logits_processor(seen, scores)
        chosen = choose(seen, scores)
        tokens[:, length] = chosen
        length += 1
        outcome = observe(chosen.tolist())
        if stopping_criteria is not None and bool(stopping_criteria(tokens[:, :length], scores).all()):
            outcome = True
        feed_from = length - 1
        if outcome is not True and outcome:  # tokens to feed after the chosen one (one row: a tool's output)
            if length + len(outcome) >= total:
                break  # they spend the rest of the budget: nothing more is generated
            tokens[0, length : length + len(outcome)] = torch.tensor(outcome, device=device)
            length += len(outcome)
        elif outcome is True or length == total:
            break
        if positions is not None:  # left-padded rows (several of them: one position per step)
            positions = positions[:, -1:] + 1
        logits = model(
            input_ids=tokens[:, feed_from:length],
            attention_mask=None if mask is None else mask[:, :length],
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
    return tokens[:, :length]
