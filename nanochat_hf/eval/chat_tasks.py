"""nanochat's chat evaluation tasks (ChatCORE): the problems, where they come from, and how each is graded.

| task | source (Hub id, config/split) | kind | graded by |
|---|---|---|---|
| ARC-Easy, ARC-Challenge | `allenai/ai2_arc` ARC-Easy / ARC-Challenge, test | categorical | the letter with the highest logit |
| MMLU | `cais/mmlu` all, test | categorical | the letter with the highest logit |
| GSM8K | `openai/gsm8k` main, test | generative | the number after `#### ` |
| HumanEval | `openai/openai_humaneval` test | generative | the program passes its tests (sandbox) |
| SpellingBee | generated (256 problems) | generative | the number after `#### ` |

Prompts are nanochat's (multiple choice: the letter follows its choice, `- text=A`; GSM8K: the bare
question; HumanEval: the function header), rendered with nanochat's chat format. Rows come from the Hub
datasets with `datasets.load_dataset` in nanochat's order (`shuffle(seed=42)`, then the first
`max_problems`), or from a local .jsonl/.json/.parquet file with the same columns. Every row is checked
when the task is opened, so a missing field is reported with its row before any model is loaded.

SpellingBee is nanochat's letter-counting task in this package's own wording
(`nanochat_hf.chat.synthetic.spelling_bee`, drawn with a seed kept apart from the training data's), over the
package's word list or `spelling_words` (nanochat draws from dwyl's words_alpha.txt): graded exactly like
nanochat's, but its prompts are not nanochat's, so its number is comparable in kind rather than digit for digit.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..chat.datasets import arc_to_conversation, gsm8k_to_conversation, mmlu_to_conversation
from ..chat.synthetic import WORDS, spelling_bee
from ..chat.tokenizer_check import check_chat_tokenizer
from ..errors import UserInputError


SHUFFLE_SEED = 42  # nanochat's order of the Hub datasets' rows
SPELLING_BEE_SIZE = 256
SPELLING_BEE_SEED = 1_000_003  # not a seed the training mixtures use
MMLU_LETTERS = ("A", "B", "C", "D")
_FINAL_ANSWER = re.compile(r"#### (-?[0-9.,]+)")
_FENCED_CODE = re.compile(r"```(?:python)?\s*\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class ChatProblem:
    messages: list  # [user question, reference assistant answer]
    letters: tuple | None = None  # categorical: the answer letters the model chooses among
    reference: str | None = None  # GSM8K / SpellingBee: the final number
    entry_point: str | None = None  # HumanEval
    test: str | None = None  # HumanEval


@dataclass(frozen=True)
class ChatTask:
    name: str  # nanochat's label, e.g. "ARC-Easy"
    kind: str  # "categorical" or "generative"
    source: str  # where the problems came from, for reports
    problems: tuple


# ---------------------------------------------------------------------------------------------------------
# Grading


def final_answer(text: str) -> str | None:
    """The number after the first `#### ` (commas removed), as GSM8K's official grader reads it."""
    match = _FINAL_ANSWER.search(text)
    return match.group(1).strip().replace(",", "") if match else None


def leading_imports(prompt: str) -> str:
    """The import lines at the top of a HumanEval prompt (blank and comment lines skipped)."""
    imports = []
    for line in prompt.splitlines():
        stripped = line.strip()
        if stripped.startswith(("import ", "from ")):
            imports.append(stripped)
        elif stripped and not stripped.startswith("#"):
            break
    return "\n".join(imports)


def completion_code(completion: str) -> str:
    """The first fenced code block of the completion, else the whole completion."""
    match = _FENCED_CODE.search(completion)
    return (match.group(1) if match else completion).strip()


def humaneval_program(problem: ChatProblem, completion: str) -> str:
    """The program that passes iff the completion solves the problem: imports, code, tests, `check(f)`."""
    imports = leading_imports(problem.messages[0]["content"])
    return f"{imports}\n\n{completion_code(completion)}\n\n{problem.test}\ncheck({problem.entry_point})"


# ---------------------------------------------------------------------------------------------------------
# Rows to problems (each raises KeyError/TypeError/ValueError on a malformed row)


def _require(row: dict, fields: dict) -> None:
    for name, kind in fields.items():
        if row.get(name) is None:  # `datasets` fills a key that some rows lack with None
            raise KeyError(name)
        if not isinstance(row[name], kind):
            raise TypeError(f"field {name!r} must be {kind.__name__ if isinstance(kind, type) else kind}")


def arc_problem(row: dict) -> ChatProblem:
    _require(row, {"question": str, "choices": dict, "answerKey": str})
    labels, texts = row["choices"].get("label"), row["choices"].get("text")
    if not isinstance(labels, list) or not isinstance(texts, list) or len(labels) != len(texts) or len(labels) < 2:
        raise ValueError("'choices' must hold equally long 'label' and 'text' lists")
    if row["answerKey"] not in labels:
        raise ValueError(f"answerKey {row['answerKey']!r} is not one of the labels {labels}")
    return ChatProblem(arc_to_conversation(row)["messages"], letters=tuple(labels))


def mmlu_problem(row: dict) -> ChatProblem:
    _require(row, {"question": str, "choices": list, "answer": int})
    if len(row["choices"]) != 4:
        raise ValueError(f"MMLU has 4 choices, this row has {len(row['choices'])}")
    if not 0 <= row["answer"] < 4:
        raise ValueError(f"answer {row['answer']} is not in 0..3")
    return ChatProblem(mmlu_to_conversation(row)["messages"], letters=MMLU_LETTERS)


def gsm8k_problem(row: dict) -> ChatProblem:
    _require(row, {"question": str, "answer": str})
    reference = final_answer(row["answer"])
    if reference is None:
        raise ValueError("the answer has no final '#### <number>'")
    return ChatProblem(gsm8k_to_conversation(row)["messages"], reference=reference)


def humaneval_problem(row: dict) -> ChatProblem:
    _require(row, {"prompt": str, "canonical_solution": str, "test": str, "entry_point": str})
    messages = [
        {"role": "user", "content": row["prompt"]},
        {"role": "assistant", "content": f"{row['prompt']}\n{row['canonical_solution']}"},
    ]
    return ChatProblem(messages, entry_point=row["entry_point"], test=row["test"])


@dataclass(frozen=True)
class HubTask:
    name: str
    kind: str
    repo_id: str
    config: str | None
    split: str
    to_problem: Callable[[dict], ChatProblem]


HUB_TASKS = {
    "ARC-Easy": HubTask("ARC-Easy", "categorical", "allenai/ai2_arc", "ARC-Easy", "test", arc_problem),
    "ARC-Challenge": HubTask("ARC-Challenge", "categorical", "allenai/ai2_arc", "ARC-Challenge", "test", arc_problem),
    "MMLU": HubTask("MMLU", "categorical", "cais/mmlu", "all", "test", mmlu_problem),
    "GSM8K": HubTask("GSM8K", "generative", "openai/gsm8k", "main", "test", gsm8k_problem),
    "HumanEval": HubTask("HumanEval", "generative", "openai/openai_humaneval", None, "test", humaneval_problem),
}
TASK_NAMES = {  # command-line spelling -> nanochat's label
    "arc-easy": "ARC-Easy",
    "arc-challenge": "ARC-Challenge",
    "mmlu": "MMLU",
    "gsm8k": "GSM8K",
    "humaneval": "HumanEval",
    "spellingbee": "SpellingBee",
}
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ---------------------------------------------------------------------------------------------------------
# Loading


def _load_rows(hub_task: HubTask, source: str | None):
    """(rows as a `datasets.Dataset`, description) from the Hub, or from a local file when `source` is one."""
    from datasets import load_dataset

    if source is not None and Path(source).exists():
        path = Path(source)
        builder = LOCAL_SUFFIXES.get(path.suffix.lower())
        if builder is None or not path.is_file():
            raise UserInputError(f"{hub_task.name} data {path}: expected a .jsonl, .json or .parquet file")
        try:
            return load_dataset(builder, data_files=str(path), split="train"), str(path)
        except Exception as err:  # malformed JSON or parquet: several exception types
            raise UserInputError(
                f"{hub_task.name} data {path}: cannot read it ({type(err).__name__}: {err})"
            ) from None
    repo_id = source or hub_task.repo_id
    described = f"{repo_id}{'/' + hub_task.config if hub_task.config else ''} split {hub_task.split!r}"
    if "/" not in repo_id:
        raise UserInputError(f"{hub_task.name} data {repo_id!r}: no such file, and not a Hub dataset id (org/name)")
    try:
        return load_dataset(repo_id, hub_task.config, split=hub_task.split), described
    except Exception as err:  # offline, unknown repository, missing config or split
        raise UserInputError(
            f"{hub_task.name}: cannot load the Hub dataset {described} ({type(err).__name__}: {err}); "
            f"without network access pass a local copy of its rows with --dataset "
            f"{next(k for k, v in TASK_NAMES.items() if v == hub_task.name)}=FILE.jsonl"
        ) from None


def load_chat_task(
    name: str, source: str | None = None, max_problems: int | None = None, spelling_words=None
) -> ChatTask:
    """Open and check one task (`name` in nanochat's spelling, e.g. "GSM8K"); rows in nanochat's order."""
    if name == "SpellingBee":
        return _spelling_bee_task(max_problems, spelling_words)
    if name not in HUB_TASKS:
        raise UserInputError(f"unknown chat task {name!r}; expected one of {', '.join([*HUB_TASKS, 'SpellingBee'])}")
    hub_task = HUB_TASKS[name]
    rows, described = _load_rows(hub_task, source)
    for index, row in enumerate(rows):  # every row, in file order, before anything runs
        try:
            hub_task.to_problem(row)
        except KeyError as err:
            raise UserInputError(f"{name} ({described}) row {index}: missing field {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise UserInputError(f"{name} ({described}) row {index}: {err}") from None
    rows = rows.shuffle(seed=SHUFFLE_SEED)
    if max_problems is not None and max_problems > 0:
        rows = rows.select(range(min(max_problems, len(rows))))
    problems = tuple(hub_task.to_problem(row) for row in rows)
    if not problems:
        raise UserInputError(f"{name} ({described}): no problems")
    return ChatTask(name, hub_task.kind, described, problems)


def _spelling_bee_task(max_problems: int | None, words) -> ChatTask:
    size = SPELLING_BEE_SIZE if not max_problems or max_problems <= 0 else min(max_problems, SPELLING_BEE_SIZE)
    problems = []
    for index in range(size):
        conversation = spelling_bee(index, seed=SPELLING_BEE_SEED, words=tuple(words or WORDS))
        reference = final_answer(conversation["messages"][-1]["content"][-1]["text"])
        problems.append(ChatProblem(conversation["messages"], reference=reference))
    source = f"generated ({len(words) if words else len(WORDS)} words)"
    return ChatTask("SpellingBee", "generative", source, tuple(problems))


def check_tokenizer_for_tasks(tokenizer, tasks: list[ChatTask], where: str = "tokenizer") -> None:
    """nanochat's chat format with its template, and every answer letter a single token."""
    check_chat_tokenizer(tokenizer, where=where, require_template=True)
    for task in tasks:
        for letter in sorted({letter for problem in task.problems for letter in problem.letters or ()}):
            letter_token_id(tokenizer, letter, task.name)


def letter_token_id(tokenizer, letter: str, task_name: str) -> int:
    ids = tokenizer.encode(letter, add_special_tokens=False, split_special_tokens=True)
    if len(ids) != 1:
        raise UserInputError(
            f"{task_name}: the answer letter {letter!r} is {len(ids)} tokens for this tokenizer; categorical "
            "scoring compares the logits of single-token letters"
        )
    return ids[0]
