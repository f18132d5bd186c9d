"""ChatCORE: nanochat's chat evaluation, categorical and generative, sharded over processes.

- Categorical (ARC, MMLU): the prompt is the conversation up to `<|assistant_start|>` (nanochat's
  `render_for_completion`); a batch of prompts is padded on the right with BOS and run once, and at each
  prompt's last position only the logits of the problem's answer letters are compared - the highest is the
  model's answer. This narrows the model to the letters, as nanochat does, rather than asking it to write one.
- Generative (GSM8K, HumanEval, SpellingBee): the chat engine (`nanochat_hf.chat.engine.ChatEngine`)
  generates the reply, running the calculator tool whenever the model calls it, greedily by default with
  512 new tokens at most (nanochat's settings). The completion is graded as nanochat decodes it: every
  generated and tool-forced token, special tokens included. With `num_samples` > 1 and a temperature, a
  problem passes when any sample passes.

Each process takes problems r, r + W, ...; the per-problem outcomes are summed over processes.
"""

import logging
from dataclasses import dataclass

import torch

from ..chat.engine import ChatEngine
from ..errors import UserInputError
from ..tokenizer import render_for_completion
from .chat_tasks import ChatTask, final_answer, humaneval_program, letter_token_id
from .core import accepts_logits_to_keep, autocast_context
from .distributed import is_main_process, rank_and_world_size, reduction_device, sum_over_processes
from .sandbox import Sandbox
from .scores import chatcore_scores


logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_TOP_K = 50
DEFAULT_CATEGORICAL_BATCH_SIZE = 8


def _progress(total: int, description: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="problem", disable=not (show and is_main_process()))


def _gather(outcomes: torch.Tensor, model) -> list[int]:
    device = reduction_device(next(model.parameters()).device)
    return sum_over_processes(outcomes.to(device)).cpu().tolist()


@torch.no_grad()
def evaluate_categorical(
    model, tokenizer, task: ChatTask, batch_size: int = DEFAULT_CATEGORICAL_BATCH_SIZE, show_progress=True
):
    """1/0 per problem: the letter with the highest logit is the reference answer."""
    device = next(model.parameters()).device
    rank, world_size = rank_and_world_size()
    mine = list(range(rank, len(task.problems), world_size))
    outcomes = torch.zeros(len(task.problems), dtype=torch.long)
    pad = tokenizer.bos_token_id
    letter_ids = {}
    keep_logits = accepts_logits_to_keep(model)
    with _progress(len(mine), task.name, show_progress) as bar:
        for first in range(0, len(mine), batch_size):
            indices = mine[first : first + batch_size]
            prompts = [render_for_completion(tokenizer, {"messages": task.problems[i].messages}) for i in indices]
            length = max(len(p) for p in prompts)
            input_ids = torch.tensor([p + [pad] * (length - len(p)) for p in prompts], device=device)
            if keep_logits:  # only the prompts' last positions are needed
                last = sorted({len(p) - 1 for p in prompts})
                logits = model(input_ids=input_ids, logits_to_keep=torch.tensor(last, device=device)).logits
            else:
                last, logits = list(range(length)), model(input_ids=input_ids).logits
            for row, (index, prompt) in enumerate(zip(indices, prompts, strict=True)):
                problem = task.problems[index]
                for letter in problem.letters:
                    if letter not in letter_ids:
                        letter_ids[letter] = letter_token_id(tokenizer, letter, task.name)
                scores = logits[row, last.index(len(prompt) - 1), [letter_ids[x] for x in problem.letters]]
                predicted = problem.letters[int(scores.argmax())]
                outcomes[index] = int(predicted == problem.messages[-1]["content"])
            bar.update(len(indices))
    return _gather(outcomes, model)


def grade_completion(task: ChatTask, index: int, completion: str, sandbox: Sandbox | None) -> bool:
    problem = task.problems[index]
    if task.name == "HumanEval":
        return sandbox.run(humaneval_program(problem, completion)).passed
    return final_answer(completion) == problem.reference


def evaluate_generative(
    model,
    tokenizer,
    task: ChatTask,
    sandbox: Sandbox | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_k: int | None = DEFAULT_TOP_K,
    num_samples: int = 1,
    seed: int = 42,
    generate_kwargs: dict | None = None,
    show_progress: bool = True,
):
    """1/0 per problem: any of the sampled replies is right (HumanEval: runs in `sandbox`, which must be on)."""
    if task.name == "HumanEval":
        (sandbox or Sandbox()).check_enabled()  # refuses before any generation when not opted in
    engine = ChatEngine(model, tokenizer)
    rank, world_size = rank_and_world_size()
    mine = list(range(rank, len(task.problems), world_size))
    outcomes = torch.zeros(len(task.problems), dtype=torch.long)
    samples = 1 if temperature == 0 else num_samples  # greedy replies are all the same
    passed = 0
    with _progress(len(mine), task.name, show_progress) as bar:
        for done, index in enumerate(mine, start=1):
            messages = task.problems[index].messages[:-1]
            for sample in range(samples):
                try:
                    reply = engine.generate(
                        messages,
                        max_new_tokens=max_new_tokens,
                        temperature=temperature,
                        top_k=top_k,
                        seed=seed + sample,
                        **(generate_kwargs or {}),
                    )
                except UserInputError as err:  # e.g. a prompt longer than the model's context
                    logger.warning("%s problem %d: %s; counted as failed", task.name, index, err)
                    break
                completion = tokenizer.decode(reply.token_ids, skip_special_tokens=False)
                if grade_completion(task, index, completion, sandbox):
                    outcomes[index] = 1
                    break
            passed += int(outcomes[index])
            bar.update(1)
            bar.set_postfix_str(f"{passed}/{done} passed")
    return _gather(outcomes, model)


@dataclass
class ChatResult:
    outcomes: dict  # task name -> list of 1/0 per problem
    sources: dict  # task name -> where its problems came from
    scores: dict  # chatcore_scores(...)

    def to_dict(self) -> dict:
        return {
            **self.scores,
            "problems": {name: len(values) for name, values in self.outcomes.items()},
            "sources": dict(self.sources),
        }


def evaluate_chat(
    model,
    tokenizer,
    tasks: list[ChatTask],
    sandbox: Sandbox | None = None,
    batch_size: int = DEFAULT_CATEGORICAL_BATCH_SIZE,
    autocast_dtype=None,
    show_progress: bool = True,
    **generation,
) -> ChatResult:
    """Every task in turn; `generation` goes to `evaluate_generative` (max_new_tokens, temperature, ...)."""
    model.eval()
    outcomes = {}
    with autocast_context(model, autocast_dtype):
        for task in tasks:
            if task.kind == "categorical":
                outcomes[task.name] = evaluate_categorical(model, tokenizer, task, batch_size, show_progress)
            else:
                outcomes[task.name] = evaluate_generative(
                    model, tokenizer, task, sandbox, show_progress=show_progress, **generation
                )
    names = [name for name, values in outcomes.items() for _ in values]
    scores = chatcore_scores([v for values in outcomes.values() for v in values], names)
    return ChatResult(outcomes, {task.name: task.source for task in tasks}, scores)
