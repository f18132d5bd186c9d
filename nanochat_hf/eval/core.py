"""CORE, scored the way nanochat scores it (DCLM, arXiv 2406.11794), batched and sharded over processes.

For example `idx` of a task (after the bundle's Random(1337) shuffle and the --max-per-task crop):

1. Few-shot examples: `num_fewshot` distinct other examples, drawn by `random.Random(1234 + idx).sample`
   from the list of all indices but `idx`, in that order.
2. Prompts, each shot followed by a blank line ("\n\n"), `d` the task's continuation delimiter:
   - multiple choice: shots `query d choices[gold]`; one prompt per choice, `query d choice`;
   - schema: shots `context_options[gold] d continuation`; one prompt per option, `option d continuation`;
   - language modelling: shots `context.strip() d continuation`; two prompts, the one without the
     continuation (stripped of surrounding whitespace, so no trailing space is left to merge into the
     continuation's first token) and the one with it.
3. Tokens: `<|bos|>` then the prompt as ordinary text (a special-token string in the data stays text).
4. Scored span: multiple choice - the tokens after the longest common prefix of the choices' sequences;
   schema - the longest common suffix of the options' sequences; language modelling - the tokens of the
   full prompt after those of the prompt without the continuation (which must be a token prefix of it).
5. One causal forward pass; the cross entropy of each span token given what precedes it.
   Multiple choice and schema: the option with the lowest *mean* loss over its span is the answer, right
   when it is `gold`. Language modelling: right when the argmax prediction equals every span token.

Sequences longer than the model can take are cropped from the left (their start is context, the span is
at the end). nanochat crops only models with a hard position limit (e.g. GPT-2's 1,024); its own models,
and ours, compute rotary positions for any length and are never cropped. The accuracy of a task is the
mean over its examples, its centered accuracy is (acc - 0.01 b) / (1 - 0.01 b) with b the random
baseline in percent, and CORE is the mean centered accuracy over the tasks.

Several examples share one forward pass here (`batch_size` examples, each with all its options, padded on
the right with BOS, which causal attention never lets earlier positions see), and only the logits from the
first span position on are computed (`logits_to_keep`), which keeps memory to a few sequences' worth.
Outcomes are per example, so they do not depend on the batch size or on the number of processes.
"""

import contextlib
import inspect
import logging
import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.pretrain import make_batch_encoder
from ..errors import UserInputError
from .bundle import CoreTask, EvalBundle
from .distributed import is_main_process, rank_and_world_size, reduction_device, sum_over_processes
from .scores import core_scores


logger = logging.getLogger(__name__)

FEWSHOT_SEED = 1234
DEFAULT_BATCH_SIZE = 8  # examples per forward pass


# ---------------------------------------------------------------------------------------------------------
# Prompts and spans


def fewshot_examples(data: list[dict], idx: int, num_fewshot: int) -> list[dict]:
    if num_fewshot == 0:
        return []
    others = [i for i in range(len(data)) if i != idx]
    return [data[i] for i in random.Random(FEWSHOT_SEED + idx).sample(others, num_fewshot)]


def _with_shots(shots) -> str:
    return "".join(f"{shot}\n\n" for shot in shots)


def render_prompts(task_type: str, item: dict, delimiter: str, fewshot: list[dict]) -> list[str]:
    """The prompt strings of one example (one per option; for language modelling: without, with)."""
    if task_type == "multiple_choice":
        head = _with_shots(f"{s['query']}{delimiter}{s['choices'][s['gold']]}" for s in fewshot)
        return [f"{head}{item['query']}{delimiter}{choice}" for choice in item["choices"]]
    if task_type == "schema":
        head = _with_shots(f"{s['context_options'][s['gold']]}{delimiter}{s['continuation']}" for s in fewshot)
        return [f"{head}{option}{delimiter}{item['continuation']}" for option in item["context_options"]]
    if task_type == "language_modeling":
        head = _with_shots(f"{s['context'].strip()}{delimiter}{s['continuation']}" for s in fewshot)
        stem = f"{head}{item['context'].strip()}{delimiter}"
        return [stem.strip(), stem + item["continuation"]]
    raise UserInputError(f"unknown CORE task type {task_type!r}")


def common_prefix_length(sequences: list[list[int]]) -> int:
    shortest = min(len(s) for s in sequences)
    for position in range(shortest):
        if any(s[position] != sequences[0][position] for s in sequences):
            return position
    return shortest


def common_suffix_length(sequences: list[list[int]]) -> int:
    return common_prefix_length([s[::-1] for s in sequences])


@dataclass(frozen=True)
class PreparedExample:
    rows: tuple  # token-id lists, BOS first; one per option (one for language modelling)
    spans: tuple  # (start, end) per row: the scored tokens are row[start:end]
    gold: int  # the right option (1 for language modelling: "the continuation matched")


def prepare_example(task: CoreTask, data: list[dict], idx: int, encode, bos_id: int) -> PreparedExample:
    item = data[idx]
    prompts = render_prompts(
        task.task_type, item, task.continuation_delimiter, fewshot_examples(data, idx, task.num_fewshot)
    )
    rows = [[bos_id, *tokens] for tokens in encode(prompts)]
    if task.task_type == "multiple_choice":
        start = common_prefix_length(rows)
        return PreparedExample(tuple(rows), tuple((start, len(r)) for r in rows), item["gold"])
    if task.task_type == "schema":
        suffix = min(common_suffix_length(rows), min(len(r) for r in rows) - 1)  # BOS is never scored
        return PreparedExample(tuple(rows), tuple((len(r) - suffix, len(r)) for r in rows), item["gold"])
    without, full = rows
    if not (len(without) < len(full) and full[: len(without)] == without):
        raise UserInputError(
            f"CORE task {task.label!r}, example {idx}: the prompt without its continuation does not tokenize as a "
            "prefix of the prompt with it, so the continuation's tokens cannot be found"
        )
    return PreparedExample((tuple(full),), ((len(without), len(full)),), 1)


def bos_token_id(tokenizer) -> int:
    """The id CORE prepends to every sequence and pads with: BOS, or EOS for tokenizers without one (GPT-2)."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise UserInputError("tokenizer: has neither a BOS nor an EOS token; CORE prepends BOS to every sequence")
    return token_id


@dataclass(frozen=True)
class PreparedTask:
    task: CoreTask
    examples: tuple  # PreparedExample per selected example, in selection order


def prepare_core(bundle: EvalBundle, tokenizer, max_per_task: int = -1) -> list[PreparedTask]:
    """Select and tokenize every task's examples (no model needed: problems surface before model work)."""
    bos_id = bos_token_id(tokenizer)
    encode = make_batch_encoder(tokenizer).encode_batch
    prepared = []
    for task in bundle.tasks:
        data = task.select(max_per_task)
        examples = tuple(prepare_example(task, data, idx, encode, bos_id) for idx in range(len(data)))
        prepared.append(PreparedTask(task, examples))
    return prepared


# ---------------------------------------------------------------------------------------------------------
# Scoring


def crop_left(row, span, max_length: int | None):
    """Keep the last `max_length` tokens of `row`, shifting the span with them."""
    if max_length is None or len(row) <= max_length:
        return row, span
    cut = len(row) - max_length
    start, end = span[0] - cut, span[1] - cut
    if start < 1:
        raise UserInputError(
            f"a scored continuation of {span[1] - span[0]} tokens does not fit the model's {max_length} positions"
        )
    return row[cut:], (start, end)


def model_max_length(model) -> int | None:
    """How many positions the model accepts: None for models without a hard limit (nanochat's, ours)."""
    config = model.config
    if getattr(config, "model_type", None) in ("nanochat_hf", "nanochat"):
        return None
    for name in ("n_positions", "max_position_embeddings"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def autocast_context(model, dtype):
    """Mixed precision on the model's device type (nanochat evaluates in bfloat16 autocast on GPUs)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=dtype)


def accepts_logits_to_keep(model) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def _span_outcomes(model, rows, spans, pad_id: int, keep_logits: bool) -> list[tuple[float, bool]]:
    """(mean cross entropy, greedy match) of each row's span, in one forward pass."""
    device = next(model.parameters()).device
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    input_ids = input_ids.to(device)
    # Position p predicts token p + 1, so a span [start, end) is predicted from positions start-1 .. end-2.
    first = min(start for start, _ in spans) - 1
    kwargs = {"logits_to_keep": length - first} if keep_logits else {}
    logits = model(input_ids=input_ids, **kwargs).logits
    offset = length - logits.shape[1]  # index of logits[:, 0] in the sequence
    outcomes = []
    for i, (start, end) in enumerate(spans):
        span_logits = logits[i, start - 1 - offset : end - 1 - offset].float()
        targets = input_ids[i, start:end]
        losses = F.cross_entropy(span_logits, targets, reduction="none")
        mean_loss = losses.mean().item() if len(targets) else math.nan
        outcomes.append((mean_loss, bool((span_logits.argmax(dim=-1) == targets).all().item())))
    return outcomes


def _decide(task_type: str, outcomes: list[tuple[float, bool]]) -> int:
    """The example's prediction: the chosen option, or 1/0 for a (mis)matched continuation."""
    if task_type == "language_modeling":
        return int(outcomes[0][1])
    mean_losses = [loss for loss, _ in outcomes]
    return mean_losses.index(min(mean_losses))  # the first lowest, as Python's min picks it


@dataclass
class CoreTaskResult:
    label: str
    task_type: str
    num_fewshot: int
    random_baseline: float
    predictions: list[int]
    references: list[int]
    accuracy: float = 0.0
    centered: float = 0.0


@dataclass
class CoreResult:
    tasks: dict  # label -> CoreTaskResult, in the bundle's order
    core_metric: float

    def to_dict(self) -> dict:
        return {
            "accuracy": {label: t.accuracy for label, t in self.tasks.items()},
            "centered": {label: t.centered for label, t in self.tasks.items()},
            "core_metric": self.core_metric,
            "tasks": {
                label: {
                    "type": t.task_type,
                    "shots": t.num_fewshot,
                    "examples": len(t.predictions),
                    "random_baseline": t.random_baseline,
                }
                for label, t in self.tasks.items()
            },
        }


def score_task(
    model,
    prepared: PreparedTask,
    pad_id: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    show_progress: bool = True,
) -> list[int]:
    """Every example's prediction; this process scores its share, the rest come from the others."""
    from tqdm.auto import tqdm

    task = prepared.task
    rank, world_size = rank_and_world_size()
    mine = list(range(rank, len(prepared.examples), world_size))
    predictions = torch.zeros(len(prepared.examples), dtype=torch.long)
    keep_logits = accepts_logits_to_keep(model)
    description = f"CORE {task.label} ({task.num_fewshot}-shot {task.task_type})"
    # Every process runs as many forward passes as the busiest one: a sharded model (FSDP, ZeRO-3) gathers
    # its weights collectively in each pass, so a process that stopped early would leave the others waiting.
    num_batches = math.ceil(math.ceil(len(prepared.examples) / world_size) / batch_size)
    with tqdm(total=len(mine), desc=description, unit="ex", disable=not (show_progress and is_main_process())) as bar:
        for first in range(0, num_batches * batch_size, batch_size):
            indices = mine[first : first + batch_size]
            if not indices:
                _span_outcomes(model, [[pad_id, pad_id]], [(1, 2)], pad_id, keep_logits)  # keeps the passes in step
                continue
            rows, spans, owners = [], [], []
            for idx in indices:
                example = prepared.examples[idx]
                for row, span in zip(example.rows, example.spans, strict=True):
                    row, span = crop_left(list(row), span, max_length)
                    rows.append(row)
                    spans.append(span)
                    owners.append(idx)
            outcomes = _span_outcomes(model, rows, spans, pad_id, keep_logits)
            for idx in indices:
                predictions[idx] = _decide(
                    task.task_type, [o for o, owner in zip(outcomes, owners, strict=True) if owner == idx]
                )
            bar.update(len(indices))
    # Each process filled its own entries (others are 0): the sum over processes holds them all.
    device = reduction_device(next(model.parameters()).device)
    return sum_over_processes(predictions.to(device)).cpu().tolist()


def score_core(
    model,
    prepared_tasks: list[PreparedTask],
    pad_id: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_length: int | None = None,
    autocast_dtype=None,
    show_progress: bool = True,
) -> CoreResult:
    """CORE of `model` on prepared tasks (see `prepare_core`); every process gets the same result."""
    if max_length is None:
        max_length = model_max_length(model)
    was_training = model.training
    model.eval()
    predictions, references, labels = [], [], []
    try:
        with autocast_context(model, autocast_dtype):
            for prepared in prepared_tasks:
                predictions += score_task(model, prepared, pad_id, batch_size, max_length, show_progress)
                references += [example.gold for example in prepared.examples]
                labels += [prepared.task.label] * len(prepared.examples)
    finally:
        model.train(was_training)
    baselines = {p.task.label: p.task.random_baseline for p in prepared_tasks}
    scores = core_scores(predictions, references, labels, baselines)
    results, start = {}, 0
    for prepared in prepared_tasks:
        task, count = prepared.task, len(prepared.examples)
        results[task.label] = CoreTaskResult(
            label=task.label,
            task_type=task.task_type,
            num_fewshot=task.num_fewshot,
            random_baseline=task.random_baseline,
            predictions=predictions[start : start + count],
            references=references[start : start + count],
            accuracy=scores["accuracy"][task.label],
            centered=scores["centered"][task.label],
        )
        start += count
        if show_progress and is_main_process():
            logger.info(
                "%s: accuracy %.4f, centered %.4f",
                task.label,
                results[task.label].accuracy,
                results[task.label].centered,
            )
    return CoreResult(tasks=results, core_metric=scores["core_metric"])


def evaluate_core(model, tokenizer, bundle: EvalBundle, max_per_task: int = -1, **kwargs) -> CoreResult:
    """Prepare and score in one call (keyword arguments as `score_core`)."""
    prepared = prepare_core(bundle, tokenizer, max_per_task)
    return score_core(model, prepared, bos_token_id(tokenizer), **kwargs)
