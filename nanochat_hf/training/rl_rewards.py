"""Rewards of an RL run (trl reward functions), pass@k, and the check of reward functions before training.

A trl reward function is called with the batch's `prompts`, `completions` (here conversational:
`[{"role": "assistant", "content": text}]` per sample) and every dataset column as a keyword argument
(`answer`), and returns one float per completion.

- `exact_answer_reward`: nanochat's RL reward: 1.0 when the number after the first `#### ` of the
  completion (commas removed) equals the reference answer as a string, else 0.0.
- `format_reward`: 1.0 when the completion has a `#### <number>` at all, right or wrong (optional).

`pass_at_k` is the unbiased estimator over the samples of one question (n samples, c correct):
1 - C(n-c, k) / C(n, k).
"""

import math
import numbers

from ..errors import UserInputError
from ..eval.chat_tasks import final_answer


def completion_text(completion) -> str:
    """The text of a completion, whether trl hands it as a string or as a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        pieces = []
        for message in completion:
            content = message.get("content", "") if isinstance(message, dict) else message
            if isinstance(content, list):  # content parts
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            pieces.append(str(content))
        return "".join(pieces)
    return str(completion)


def exact_answer_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion's `#### ` number equals the reference answer (commas ignored), else 0.0."""
    return [
        1.0 if final_answer(completion_text(completion)) == str(reference).replace(",", "") else 0.0
        for completion, reference in zip(completions, answer, strict=True)
    ]


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 where the completion gives a final `#### <number>` (right or wrong), else 0.0."""
    return [1.0 if final_answer(completion_text(completion)) is not None else 0.0 for completion in completions]


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """The probability that at least one of k samples drawn from the n is correct."""
    if k > num_samples:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {num_samples}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def pass_at_k_values(num_samples: int) -> tuple[int, ...]:
    """The k logged for groups of `num_samples`: 1, 2, 4, 8, ... up to the group size."""
    values, k = [], 1
    while k <= num_samples:
        values.append(k)
        k *= 2
    return tuple(values)


def reward_name(func) -> str:
    return getattr(func, "__name__", type(func).__name__)


def check_reward_functions(reward_funcs, rows: list[dict]) -> None:
    """Call every reward function on probe completions of `rows`; refuse one whose output is not one number
    (or None) per completion. Probes: the reference answer, a wrong one and an empty completion per row."""
    prompts, completions, columns = [], [], {key: [] for key in rows[0] if key != "prompt"}
    for row in rows:
        for text in (f"#### {row['answer']}", "#### -1.5e9", ""):
            prompts.append(row["prompt"])
            completions.append([{"role": "assistant", "content": text}])
            for key in columns:
                columns[key].append(row[key])
    for func in reward_funcs:
        name = reward_name(func)
        try:
            rewards = func(prompts=prompts, completions=completions, completion_ids=[[] for _ in prompts], **columns)
        except Exception as err:  # anything a user's function raises, reported with its name
            raise UserInputError(
                f"reward function {name!r} fails on probe completions ({type(err).__name__}: {err}); it is called "
                f"as func(prompts=..., completions=..., completion_ids=..., {', '.join(columns)}=...)"
            ) from None
        if not hasattr(rewards, "__len__") or len(rewards) != len(prompts):
            got = len(rewards) if hasattr(rewards, "__len__") else type(rewards).__name__
            raise UserInputError(
                f"reward function {name!r} returned {got} rewards for {len(prompts)} completions; it must return "
                "exactly one float (or None) per completion"
            )
        bad = [value for value in rewards if value is not None and not isinstance(value, numbers.Real)]
        if bad:
            raise UserInputError(f"reward function {name!r} returned {bad[0]!r}; expected floats (or None)")
