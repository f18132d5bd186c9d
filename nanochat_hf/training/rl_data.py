"""The problems of an RL run: a question to ask and the reference final answer to compare with.

Each row becomes `{"prompt": [{"role": "user", "content": question}], "answer": "42"}`: the prompt is a
conversation (rendered by the chat engine exactly as `nanochat-hf chat` renders it), the answer is what
nanochat's GSM8K grader compares with - the number after `#### ` in the reference solution, commas
removed. A row may also give the bare number as its answer.

Sources (`--dataset` / `--eval_dataset`):

- `gsm8k`: the Hub's `openai/gsm8k` (config `main`), loaded with `datasets.load_dataset`; train for
  training, the test split (nanochat's order: shuffled with seed 42, the first `eval_size`) for evaluation;
- any other Hub id `org/name` with `question` and `answer` columns (`--dataset_split` picks the split);
- a local `.jsonl` / `.json` / `.parquet` file with `question` and `answer` rows;
- `arithmetic`: the embedded synthetic word problems (`nanochat_hf.chat.synthetic.arithmetic_problem`),
  no download; evaluation uses other indices of the same generator.

Every row is checked when the data is loaded, so a row without a usable answer stops the run with its
source and row number before the model is loaded.
"""

from pathlib import Path

from datasets import Dataset, load_dataset

from ..chat.synthetic import arithmetic_problem
from ..errors import UserInputError
from ..eval.chat_tasks import SHUFFLE_SEED, final_answer


GSM8K_REPO, GSM8K_CONFIG = "openai/gsm8k", "main"
SYNTHETIC_SOURCE = "arithmetic"
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def reference_answer(answer) -> str | None:
    """The number a completion must end with: after `#### ` in a solution, or the answer itself if a number."""
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        return None
    found = final_answer(answer)
    if found is not None:
        return found
    bare = answer.strip().replace(",", "")
    return bare if final_answer(f"#### {bare}") == bare else None


def problem_row(row: dict, where: str) -> dict:
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise UserInputError(f"{where}: no 'question' (a non-empty string); RL rows need 'question' and 'answer'")
    if row.get("answer") is None:
        raise UserInputError(f"{where}: no 'answer'; RL rows need the reference answer ('#### <number>' or a number)")
    reference = reference_answer(row["answer"])
    if reference is None:
        raise UserInputError(
            f"{where}: the answer {str(row['answer'])[-60:]!r} has no final number (expected '#### <number>' "
            "at the end of a solution, or a bare number)"
        )
    return {"prompt": [{"role": "user", "content": question}], "answer": reference}


def _synthetic_rows(size: int, seed: int, start: int = 0) -> list[dict]:
    rows = []
    for index in range(start, start + size):
        messages = arithmetic_problem(index, seed=seed)["messages"]
        reply = messages[-1]["content"]
        text = reply if isinstance(reply, str) else "".join(part["text"] for part in reply if part["type"] == "text")
        rows.append({"question": messages[0]["content"], "answer": text})
    return rows


def _raw_rows(source: str, split: str, what: str):
    """(rows, description) of a local file or a Hub dataset."""
    path = Path(source)
    if path.suffix.lower() in LOCAL_BUILDERS:
        if not path.is_file():
            raise UserInputError(f"{what} {source}: no such file")
        try:
            return load_dataset(LOCAL_BUILDERS[path.suffix.lower()], data_files=str(path), split="train"), str(path)
        except Exception as err:  # malformed JSON or parquet: several exception types
            raise UserInputError(f"{what} {path}: cannot read it ({type(err).__name__}: {err})") from None
    repo_id, config = (GSM8K_REPO, GSM8K_CONFIG) if source == "gsm8k" else (source, None)
    if "/" not in repo_id:
        raise UserInputError(
            f"{what} {source!r}: expected gsm8k, {SYNTHETIC_SOURCE}, a Hub dataset id (org/name) or a "
            ".jsonl/.json/.parquet file"
        )
    described = f"{repo_id}{'/' + config if config else ''} split {split!r}"
    try:
        return load_dataset(repo_id, config, split=split), described
    except Exception as err:  # offline, unknown repository, missing config or split
        raise UserInputError(
            f"{what}: cannot load the Hub dataset {described} ({type(err).__name__}: {err}); without network "
            f"access pass a local .jsonl with question/answer rows, or --dataset {SYNTHETIC_SOURCE}"
        ) from None


def load_problems(
    source: str,
    split: str = "train",
    *,
    what: str = "--dataset",
    size: int | None = None,
    seed: int = 0,
    held_out: bool = False,
    synthetic_size: int = 1000,
) -> Dataset:
    """The checked problems of `source` as a `datasets.Dataset` with `prompt` and `answer` columns.

    `held_out` (evaluation): Hub and file rows in nanochat's order (shuffled with seed 42), the first
    `size`; synthetic problems from indices after the training set's `synthetic_size`.
    """
    if source == SYNTHETIC_SOURCE:
        start = synthetic_size if held_out else 0
        raw = _synthetic_rows(size or synthetic_size, seed, start)
        described = f"{SYNTHETIC_SOURCE} (embedded, seed {seed})"
    else:
        raw, described = _raw_rows(source, split, what)
    rows = [problem_row(dict(row), f"{what} {described} row {index}") for index, row in enumerate(raw)]
    if not rows:
        raise UserInputError(f"{what} {described}: no problems")
    dataset = Dataset.from_list(rows)
    if held_out and source != SYNTHETIC_SOURCE:
        dataset = dataset.shuffle(seed=SHUFFLE_SEED)
    if size is not None and len(dataset) > size:
        dataset = dataset.select(range(size))
    return dataset
