"""Batched chat generation: several conversations decoded together, each with its own tool loop.

nanochat's engine keeps, per row, an "in python block" flag and a queue of forced tokens, and replaces
the sampled token by the queue's head while the queue is not empty. The same happens here, in the decoding
loop of `decode_loop.py` (one prefill of the left-padded prompts, then one token per row per step):

- `RowsWatcher.observe` reads each row's new token, feeds it to the row's `ReplyBuilder`, and when a row
  closes a tool call evaluates it and queues `<|output_start|>`, the result as ordinary text,
  `<|output_end|>`. A row is finished at `<|assistant_end|>` / `<|bos|>`, at the row's token budget, or
  when `should_stop(row)` says so (a client went away): the other rows go on. A finished row's reply is
  handed to `on_reply` at once, while the others are still generating.
- `RowsSampler.choose` forces each row's queued token, and otherwise samples the row's token with its own
  temperature (0 = argmax) and top-k, as nanochat does (a draw among the top-k logits only, not a softmax
  over the whole vocabulary); rows with different settings share a batch.

The caller's `logits_processor` (and `stopping_criteria`) run as in `generate()`: on every row's scores
before the choice (after every step). Forced tokens go through the model one per step, as in nanochat's
engine (the one-conversation `ChatEngine.generate` feeds them in one forward instead); a step where every
row is forced draws nothing, so one conversation here consumes the random stream as `ChatEngine.generate`
does and gets the same reply from a seed. Budgets count sampled and forced tokens.
"""

from collections import deque
from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteriaList

from ..errors import UserInputError
from ..tokenizer.special_tokens import ASSISTANT_END, BOS, OUTPUT_END, OUTPUT_START, PYTHON_END
from .decode_loop import decode
from .processor_chain import ProcessorChain
from .reply import AssistantReply, ChatEvent, ReplyBuilder


class Row:
    def __init__(self, builder: ReplyBuilder, budget: int, temperature: float, top_k: int | None):
        self.builder = builder
        self.budget = budget
        self.temperature = temperature
        self.top_k = top_k or 0
        self.produced = 0
        self.forced: deque[int] = deque()  # tool-output tokens still to force
        self.done = False
        self.finished = False  # the model ended its turn (vs. budget or a stop request)
        self.reply: AssistantReply | None = None

    def close(self, index: int, on_reply) -> AssistantReply:
        if self.reply is None:
            self.done = True
            self.reply = self.builder.finish(finished=self.finished)
            if on_reply is not None:
                on_reply(index, self.reply)
        return self.reply


class RowsWatcher:
    """The rows' tool state machines. With `forced_at_once` (one row only) a tool's output is not forced token by
    token: `observe` returns it, for the decoding loop to feed in one forward (as `ChatEngine.generate` does)."""

    def __init__(self, rows: list[Row], special: dict, tool, encode_text, should_stop, on_reply, forced_at_once=False):
        if forced_at_once and len(rows) != 1:
            raise ValueError("forced_at_once: one row only")
        self.rows = rows
        self.forced_at_once = forced_at_once
        self.to_feed: list[int] = []
        self.on_reply = on_reply
        self.special = special
        self.tool = tool
        self.encode_text = encode_text
        self.should_stop = should_stop
        self.stop_tokens = (special[ASSISTANT_END], special[BOS])
        self.python_end = special[PYTHON_END]

    def _observe(self, row: Row, token: int) -> None:
        row.produced += 1
        if row.forced:  # the sampler forced this token: it is already part of the tool output
            row.forced.popleft()
        else:
            row.builder.sampled(token)
            if token in self.stop_tokens:
                row.done = row.finished = True
                return
            if token == self.python_end and row.builder.kind == "python":
                result, _ = self.tool(row.builder.tool_call())
                forced = [self.special[OUTPUT_START], *self.encode_text(result), self.special[OUTPUT_END]]
                row.builder.tool_output(result, forced)
                if self.forced_at_once:
                    row.produced += len(forced)
                    self.to_feed = forced
                else:
                    row.forced.extend(forced)
        if row.produced >= row.budget:
            row.done = True

    def observe(self, tokens: list[int]) -> bool | list[int]:
        """Feeds each row its new token; True once every row is done (with `forced_at_once`: the tool output to
        feed, when the token closed a tool call)."""
        self.to_feed = []
        all_done = True
        for index, row in enumerate(self.rows):
            if row.done:
                continue
            self._observe(row, tokens[index])
            if not row.done and self.should_stop is not None and self.should_stop(index):
                row.done = True
            if row.done:
                row.close(index, self.on_reply)
            else:
                all_done = False
        return all_done or self.to_feed


class RowsSampler:
    """Chooses every row's next token nanochat's way: argmax at temperature 0, else a draw among the top-k
    logits divided by the temperature; a queued tool-output token wins. Rows sharing settings are sampled
    together. A token the caller's logits processor set to -inf is never drawn (its probability is 0), and
    argmax only picks it when everything is -inf."""

    def __init__(self, rows: list[Row]):
        self.rows = rows
        self.groups: dict[tuple, list[int]] = {}
        for index, row in enumerate(rows):
            self.groups.setdefault((row.temperature, row.top_k), []).append(index)
        self.group_indices = None

    def choose(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.LongTensor:
        forced = [(index, row.forced[0]) for index, row in enumerate(self.rows) if row.forced]
        if len(forced) == len(self.rows):  # nothing to draw: the random stream stays where `generate` leaves it
            return torch.tensor([token for _, token in forced], device=scores.device)
        if self.group_indices is None:
            self.group_indices = {key: torch.tensor(rows, device=scores.device) for key, rows in self.groups.items()}
        single = len(self.group_indices) == 1  # every row shares its settings: no gathering, no scattering
        chosen = None if single else torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for (temperature, top_k), rows in self.group_indices.items():
            logits = scores if single else scores.index_select(0, rows)
            if temperature == 0:
                tokens = logits.argmax(dim=-1)
            elif 0 < top_k < logits.shape[-1]:
                values, indices = torch.topk(logits, top_k, dim=-1)
                draw = torch.multinomial(torch.softmax(values / temperature, dim=-1), 1)
                tokens = indices.gather(1, draw).squeeze(1)
            else:
                tokens = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)
            if single:
                chosen = tokens
            else:
                chosen[rows] = tokens
        if forced:
            index, token = zip(*forced, strict=True)
            chosen[list(index)] = torch.tensor(token, device=scores.device)
        return chosen


# What `generate_batch` takes besides its own arguments, as `generate()` would.
BATCH_GENERATE_KWARGS = frozenset({"logits_processor", "stopping_criteria"})


def _per_row(value, count: int, name: str) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise UserInputError(f"{name}: {len(value)} values for {count} conversations")
        return list(value)
    return [value] * count


def generate_rows(
    engine,
    conversations,
    *,
    max_new_tokens,
    temperature,
    top_k,
    seed: int | None = None,
    on_event: Callable[[int, ChatEvent], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    on_reply: Callable[[int, AssistantReply], None] | None = None,
    **generate_kwargs,
) -> list[AssistantReply]:
    """The replies to `conversations`, generated together; see `ChatEngine.generate_batch`."""
    unknown = sorted(set(generate_kwargs) - BATCH_GENERATE_KWARGS)
    if unknown:
        raise UserInputError(
            f"generate_batch: unsupported generation arguments {', '.join(unknown)}; the batched engine takes "
            f"{' and '.join(sorted(BATCH_GENERATE_KWARGS))} (sampling is set by temperature and top_k)"
        )
    user_processors = generate_kwargs.get("logits_processor") or []
    # One chain, signatures checked once (a LogitsProcessorList would look them up at every step).
    processors = ProcessorChain(user_processors) if user_processors else None
    user_criteria = list(generate_kwargs.get("stopping_criteria") or [])
    criteria = StoppingCriteriaList(user_criteria) if user_criteria else None
    count = len(conversations)
    if count == 0:
        return []
    budgets = _per_row(max_new_tokens, count, "max_new_tokens")
    temperatures = _per_row(temperature, count, "temperature")
    top_ks = _per_row(top_k, count, "top_k")
    prompts = [engine.prompt_ids(messages) for messages in conversations]
    context = engine.context_length()
    rows = []
    for index, (ids, budget, row_temperature, row_top_k) in enumerate(
        zip(prompts, budgets, temperatures, top_ks, strict=True)
    ):
        if budget <= 0:
            raise UserInputError(f"max_new_tokens must be positive, got {budget}")
        if row_temperature < 0:
            raise UserInputError(f"temperature must be >= 0, got {row_temperature}")
        if context is not None and len(ids) >= context:
            raise UserInputError(
                f"conversation {index} is {len(ids)} tokens, the model's context is {context}; start a new conversation"
            )
        events = None if on_event is None else (lambda event, index=index: on_event(index, event))
        builder = ReplyBuilder(engine.tokenizer, engine.special, events)
        budget = budget if context is None else min(budget, context - len(ids))
        rows.append(Row(builder, budget, row_temperature, row_top_k))
    if seed is not None:
        torch.manual_seed(seed)

    watcher = RowsWatcher(rows, engine.special, engine.tool, engine.encode_text, should_stop, on_reply)
    decode(
        engine.model,
        prompts,
        pad_token_id=engine.special[BOS],
        max_new_tokens=max(row.budget for row in rows),
        choose=RowsSampler(rows).choose,
        observe=watcher.observe,
        logits_processor=processors,
        stopping_criteria=criteria,
    )
    return [row.close(index, on_reply) for index, row in enumerate(rows)]
