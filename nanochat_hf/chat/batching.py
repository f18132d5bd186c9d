"""Batched chat generation: several conversations in one `model.generate()` call, each with its own tool loop.

nanochat's engine keeps, per row, an "in python block" flag and a queue of forced tokens, and replaces
the sampled token by the queue's head while the queue is not empty. The same happens here inside one
`generate()` call over left-padded prompts:

- `_RowsWatcher` (a `StoppingCriteria`, which transformers calls after every step with the whole batch)
  reads each row's new token, feeds it to the row's `ReplyBuilder`, and when a row closes a tool call
  evaluates it and queues `<|output_start|>`, the result as ordinary text, `<|output_end|>`. It reports a
  row finished at `<|assistant_end|>` / `<|bos|>`, at the row's token budget, or when `should_stop(row)`
  says so (a client went away): the other rows go on. A finished row's reply is handed to `on_reply`
  at once, while the others are still generating.
- `_RowsSampler` (a `LogitsProcessor`) forces each row's queued token, and otherwise samples the row's
  token with its own temperature (0 = argmax) and top-k, as nanochat does (a draw among the top-k logits
  only, not a softmax over the whole vocabulary); rows with different settings share a batch.

Forced tokens go through the model one per step, as in nanochat's engine (the one-conversation
`ChatEngine.generate` appends them in one go instead). Budgets count sampled and forced tokens.
"""

from collections import deque
from collections.abc import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ..errors import UserInputError
from ..tokenizer.special_tokens import ASSISTANT_END, BOS, OUTPUT_END, OUTPUT_START, PYTHON_END
from .processor_chain import chain_processors
from .reply import AssistantReply, ChatEvent, ReplyBuilder


class _Row:
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


class _RowsWatcher(StoppingCriteria):
    def __init__(self, rows: list[_Row], special: dict, tool, encode_text, should_stop, on_reply):
        self.rows = rows
        self.on_reply = on_reply
        self.special = special
        self.tool = tool
        self.encode_text = encode_text
        self.should_stop = should_stop
        self.stop_tokens = (special[ASSISTANT_END], special[BOS])
        self.python_end = special[PYTHON_END]
        self.done = None  # the last answer, rebuilt only when a row ends

    def _observe(self, row: _Row, token: int) -> None:
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
                row.forced.extend(forced)
        if row.produced >= row.budget:
            row.done = True

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tokens = input_ids[:, -1].tolist()
        changed = self.done is None
        for index, row in enumerate(self.rows):
            if row.done:
                continue
            self._observe(row, tokens[index])
            if not row.done and self.should_stop is not None and self.should_stop(index):
                row.done = True
            if row.done:
                row.close(index, self.on_reply)
                changed = True
        if changed:
            self.done = torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)
        return self.done


class _RowsSampler(LogitsProcessor):
    """Chooses every row's next token itself, nanochat's way (argmax at temperature 0, else a draw among the
    top-k logits divided by the temperature; a queued tool-output token wins), and returns scores that leave
    only that token possible, for `generate()`'s greedy step to pick. Rows sharing settings are sampled together."""

    def __init__(self, rows: list[_Row]):
        self.rows = rows
        self.groups: dict[tuple, list[int]] = {}
        for index, row in enumerate(rows):
            self.groups.setdefault((row.temperature, row.top_k), []).append(index)
        self.group_indices = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
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
        forced = [(index, row.forced[0]) for index, row in enumerate(self.rows) if row.forced]
        if forced:
            index, token = zip(*forced, strict=True)
            chosen[list(index)] = torch.tensor(token, device=scores.device)
        # -inf where a user's logits processor forbade a token: such a token is never chosen by the draw
        # (its probability is 0), and argmax only picks it when everything is -inf.
        return torch.full_like(scores, -float("inf")).scatter_(1, chosen.unsqueeze(1), 0.0)


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
        rows.append(_Row(builder, budget, row_temperature, row_top_k))
    if seed is not None:
        torch.manual_seed(seed)

    device = next(engine.model.parameters()).device
    pad = engine.special[BOS]
    width = max(len(ids) for ids in prompts)
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=device)

    config = engine._generation_config(0, None)  # greedy over the sampler's choice (one finite score per row)
    config.eos_token_id = [engine.special[ASSISTANT_END], engine.special[BOS]]
    config.return_dict_in_generate = False
    config.max_new_tokens = max(row.budget for row in rows)
    watcher = _RowsWatcher(rows, engine.special, engine.tool, engine.encode_text, should_stop, on_reply)
    processors = LogitsProcessorList(
        chain_processors([*generate_kwargs.pop("logits_processor", []), _RowsSampler(rows)])
    )
    criteria = StoppingCriteriaList([*generate_kwargs.pop("stopping_criteria", []), watcher])
    engine.model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        generation_config=config,
        logits_processor=processors,
        stopping_criteria=criteria,
        **generate_kwargs,
    )
    return [row.close(index, on_reply) for index, row in enumerate(rows)]
