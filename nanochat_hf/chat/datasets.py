"""Chat training data: nanochat's mixtures by name, Hub datasets, local jsonl, or the embedded synthetic set.

A mixture is a list of entries, one string each, as a recipe YAML writes them:

    dataset_mixture:
      - smoltalk:train[:10000]     # HuggingFaceTB/smol-smoltalk, first 10,000 rows of train
      - gsm8k                      # openai/gsm8k main/train, answers as calculator tool calls
      - identity*2                 # "*N" repeats an entry (nanochat lists a task twice to oversample it)
      - spelling_bee:300           # a synthetic task: ":N" is its size
      - data/my_chats.jsonl        # {"messages": [...]} per line
      - my-org/my-chats:train      # any Hub dataset with a `messages` column

`SOURCE[:SPLIT_OR_SIZE][*REPEAT]`. Named Hub sources (nanochat's midtraining/SFT tasks): `smoltalk`, `mmlu` (auxiliary
train, multiple choice), `gsm8k`, `arc_easy`, `arc_challenge`; synthetic (no download,
`nanochat_hf.chat.synthetic`): `arithmetic`, `spelling_bee`, `simple_spelling`, `identity`, and
`embedded` (all four interleaved). Splits use `datasets` syntax, slices included.

Every conversation is validated (roles, empty content, at least one assistant reply) and rendered to
`input_ids` / `labels` with `render_conversation` *before* training starts, so a bad row stops the run
with its source and row number, and message text can never turn into a control token.
"""

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from ..tokenizer import IGNORE_INDEX, normalize_conversation, render_conversation_with_mask
from . import synthetic


logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_SIZE = 1000
DEFAULT_EMBEDDED_SIZE = 2000
MMLU_LETTERS = "ABCD"

# ---------------------------------------------------------------------------------------------------------
# Converters from the Hub datasets' rows to conversations (pure functions, tested without downloads)


def multiple_choice_question(question: str, choices: list[str], letters: Iterable[str]) -> str:
    """nanochat's multiple-choice user message, exactly: the letter follows its choice."""
    lines = "".join(f"- {choice}={letter}\n" for choice, letter in zip(choices, letters, strict=True))
    return f"Multiple Choice question: {question}\n{lines}\nRespond only with the letter of the correct answer."


def gsm8k_answer_parts(answer: str) -> list[dict]:
    """GSM8K's answer with `<<expr=value>>` annotations as calculator tool-call parts."""
    parts = []
    for piece in re.split(r"(<<[^>]+>>)", answer):
        if piece.startswith("<<") and piece.endswith(">>"):
            expression, equals, output = piece[2:-2].rpartition("=")
            if not equals:  # no "=": the whole span is the expression, the output is empty
                expression, output = piece[2:-2], ""
            parts.append({"type": "python", "text": expression})
            parts.append({"type": "python_output", "text": output})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def gsm8k_to_conversation(row: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": gsm8k_answer_parts(row["answer"])},
        ]
    }


def mmlu_to_conversation(row: dict) -> dict:
    # cais/mmlu's auxiliary_train nests each row under a "train" key.
    if isinstance(row.get("train"), dict):
        row = row["train"]
    letters = MMLU_LETTERS[: len(row["choices"])]
    return {
        "messages": [
            {"role": "user", "content": multiple_choice_question(row["question"], row["choices"], letters)},
            {"role": "assistant", "content": letters[row["answer"]]},
        ]
    }


def arc_to_conversation(row: dict) -> dict:
    # ARC's own labels (A-E or 1-4) are the letters, as in nanochat.
    labels, texts = row["choices"]["label"], row["choices"]["text"]
    return {
        "messages": [
            {"role": "user", "content": multiple_choice_question(row["question"], texts, labels)},
            {"role": "assistant", "content": row["answerKey"]},
        ]
    }


def messages_to_conversation(row: dict) -> dict:
    if "messages" not in row:
        raise UserInputError(f"expected a 'messages' column, found columns {sorted(row)}")
    return {"messages": row["messages"]}


@dataclass(frozen=True)
class HubTask:
    repo_id: str
    config: str | None
    default_split: str
    to_conversation: Callable[[dict], dict]


HUB_TASKS = {
    "smoltalk": HubTask("HuggingFaceTB/smol-smoltalk", None, "train", messages_to_conversation),
    "mmlu": HubTask("cais/mmlu", "auxiliary_train", "train", mmlu_to_conversation),
    "gsm8k": HubTask("openai/gsm8k", "main", "train", gsm8k_to_conversation),
    "arc_easy": HubTask("allenai/ai2_arc", "ARC-Easy", "train", arc_to_conversation),
    "arc_challenge": HubTask("allenai/ai2_arc", "ARC-Challenge", "train", arc_to_conversation),
}
SYNTHETIC_SOURCES = (*synthetic.SYNTHETIC_TASKS, "embedded")

# ---------------------------------------------------------------------------------------------------------
# Validation and rendering


def _content_is_empty(content) -> bool:
    if isinstance(content, str):
        return not content.strip()
    if isinstance(content, (list, tuple)):
        # A tool output may be empty (a GSM8K <<...>> span without "="); the message as a whole may not.
        return not any(isinstance(part, dict) and str(part.get("text", "")).strip() for part in content)
    return False  # other types are reported by normalize_conversation


def validate_conversation(conversation, where: str) -> list:
    """Check one conversation against nanochat's rules; raise UserInputError naming `where`.

    Rules: roles alternate user/assistant starting with user (one leading system message allowed), no
    message has empty content, no tool call is empty, and at least one assistant message exists.
    """
    try:
        messages = conversation["messages"] if isinstance(conversation, dict) else conversation
        turns = normalize_conversation(messages)
    except UserInputError as err:
        raise UserInputError(f"{where}: {err}") from None
    except (TypeError, KeyError) as err:
        raise UserInputError(f"{where}: not a conversation ({err})") from None
    for index, message in enumerate(messages):
        if _content_is_empty(message["content"]):
            raise UserInputError(f"{where}: message {index} ({message['role']}) has empty content")
        if isinstance(message["content"], (list, tuple)):
            for part_index, part in enumerate(message["content"]):
                if part.get("type") == "python" and not part["text"].strip():
                    raise UserInputError(f"{where}: message {index} part {part_index} is an empty tool call")
    if not any(role == "assistant" for role, _ in turns):
        raise UserInputError(f"{where}: has no assistant message, so nothing to train on")
    return messages


def tokenize_conversation(tokenizer, conversation, max_length: int, train_on_all_tokens: bool) -> dict:
    """`input_ids` and HF `labels` (unshifted, -100 where nanochat's mask is 0, or every token if asked)."""
    ids, mask = render_conversation_with_mask(tokenizer, conversation, max_tokens=max_length)
    if train_on_all_tokens:  # nanochat's midtraining: every token is a target
        return {"input_ids": ids, "labels": list(ids)}
    return {"input_ids": ids, "labels": [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]}


# ---------------------------------------------------------------------------------------------------------
# Mixture entries


@dataclass(frozen=True)
class MixtureEntry:
    text: str  # as written in the config
    source: str
    split: str | None = None
    size: int | None = None
    repeat: int = 1


_ENTRY = re.compile(r"^(?P<body>.+?)(?:\s*\*\s*(?P<repeat>\d+))?$")


def parse_mixture_entry(text: str) -> MixtureEntry:
    """`SOURCE[:SPLIT_OR_SIZE][*REPEAT]` -> MixtureEntry (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise UserInputError(f"dataset_mixture: expected entries like 'gsm8k:train' or 'identity*2', got {text!r}")
    match = _ENTRY.match(text.strip())
    body, repeat = match.group("body"), int(match.group("repeat") or 1)
    if repeat < 1:
        raise UserInputError(f"dataset_mixture entry {text!r}: the repeat count must be at least 1")
    source, _, qualifier = body.partition(":")
    source, qualifier = source.strip(), qualifier.strip() or None
    if source in SYNTHETIC_SOURCES:
        if qualifier is not None and not qualifier.isdigit():
            raise UserInputError(
                f"dataset_mixture entry {text!r}: {source} is generated; write its size as {source}:N, not {qualifier!r}"
            )
        return MixtureEntry(text, source, size=int(qualifier) if qualifier else None, repeat=repeat)
    return MixtureEntry(text, source, split=qualifier, repeat=repeat)


def read_jsonl_conversations(path: Path) -> list:
    conversations = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                conversations.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserInputError(f"{path} line {line_number}: not valid JSON ({err.msg})") from None
    if not conversations:
        raise UserInputError(f"{path}: no conversations")
    return conversations


def _entry_conversations(entry: MixtureEntry, seed: int, words) -> list | None:
    """Conversations of a synthetic or local entry; None for an entry loaded with `datasets`."""
    if entry.source == "embedded":
        return synthetic.embedded_conversations(entry.size or DEFAULT_EMBEDDED_SIZE, seed=seed)
    if entry.source in synthetic.SYNTHETIC_TASKS:
        kwargs = {"words": words} if words is not None and entry.source in ("spelling_bee", "simple_spelling") else {}
        return synthetic.synthetic_conversations(entry.source, entry.size or DEFAULT_SYNTHETIC_SIZE, seed, **kwargs)
    path = Path(entry.source)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise UserInputError(f"dataset_mixture entry {entry.text!r}: no such file {path}")
        if entry.split is not None:
            raise UserInputError(f"dataset_mixture entry {entry.text!r}: a local file has no splits")
        return read_jsonl_conversations(path)
    return None


def _load_hub_rows(entry: MixtureEntry):
    from datasets import load_dataset

    task = HUB_TASKS.get(entry.source)
    if task is None:
        task = next((t for t in HUB_TASKS.values() if t.repo_id == entry.source), None)
    if task is None:
        if "/" not in entry.source:
            known = ", ".join([*HUB_TASKS, *SYNTHETIC_SOURCES])
            raise UserInputError(
                f"dataset_mixture entry {entry.text!r}: unknown source {entry.source!r}; expected one of {known}, "
                "a Hub dataset id (org/name) or a .jsonl file"
            )
        task = HubTask(entry.source, None, "train", messages_to_conversation)
    split = entry.split or task.default_split
    try:
        rows = load_dataset(task.repo_id, task.config, split=split)
    except Exception as err:  # offline, missing repo or split: all surface as different exception types
        raise UserInputError(
            f"dataset_mixture entry {entry.text!r}: cannot load {task.repo_id}"
            f"{'/' + task.config if task.config else ''} split {split!r} ({type(err).__name__}: {err})"
        ) from None
    return rows, task.to_conversation


def load_entry(
    entry: MixtureEntry,
    tokenizer,
    max_length: int,
    train_on_all_tokens: bool = False,
    seed: int = 0,
    words=None,
    num_proc: int | None = None,
):
    """One mixture entry as a `datasets.Dataset` with `input_ids` and `labels` (repeats not applied)."""
    from datasets import Dataset

    def render(conversation, index: int) -> dict:
        messages = validate_conversation(conversation, f"dataset {entry.text!r} row {index}")
        return tokenize_conversation(tokenizer, {"messages": messages}, max_length, train_on_all_tokens)

    conversations = _entry_conversations(entry, seed, words)
    if conversations is not None:
        rendered = [render(conversation, index) for index, conversation in enumerate(conversations)]
        dataset = Dataset.from_dict(
            {"input_ids": [r["input_ids"] for r in rendered], "labels": [r["labels"] for r in rendered]}
        )
    else:
        rows, to_conversation = _load_hub_rows(entry)

        def render_row(row, index):
            try:
                conversation = to_conversation(row)
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise UserInputError(
                    f"dataset {entry.text!r} row {index}: cannot read it as a conversation ({type(err).__name__}: {err})"
                ) from None
            return render(conversation, index)

        dataset = rows.map(render_row, with_indices=True, remove_columns=rows.column_names, num_proc=num_proc)
    if not train_on_all_tokens:
        # Head truncation can cut every assistant token off a long conversation; such a row trains nothing.
        before = len(dataset)
        dataset = dataset.filter(lambda labels: any(t != IGNORE_INDEX for t in labels), input_columns="labels")
        if len(dataset) < before:
            logger.warning(
                "%s: dropped %d conversations with no assistant token within max_length",
                entry.text,
                before - len(dataset),
            )
    return dataset


def load_mixture(
    entries: list[str],
    tokenizer,
    max_length: int,
    train_on_all_tokens: bool = False,
    seed: int = 42,
    synthetic_seed: int = 0,
    words=None,
    num_proc: int | None = None,
):
    """The whole mixture, rendered and shuffled: a `datasets.Dataset` with `input_ids` and `labels`.

    Like nanochat's TaskMixture, every listed conversation appears once per repeat, in a seeded
    random order.
    """
    from datasets import concatenate_datasets

    if not entries:
        raise UserInputError("dataset_mixture: no entries")
    parts = []
    for text in entries:
        entry = parse_mixture_entry(text)
        dataset = load_entry(entry, tokenizer, max_length, train_on_all_tokens, synthetic_seed, words, num_proc)
        logger.info("%s: %d conversations x %d", entry.text, len(dataset), entry.repeat)
        parts.extend([dataset] * entry.repeat)
    return concatenate_datasets(parts).shuffle(seed=seed)


def read_words_file(path) -> tuple[str, ...]:
    """A word list (one word per line, like dwyl's words_alpha.txt) for the spelling tasks."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--spelling_words_file {path}: no such file")
    words = tuple(
        w for w in (line.strip().lower() for line in path.read_text(encoding="utf-8").splitlines()) if w.isalpha()
    )
    if not words:
        raise UserInputError(f"--spelling_words_file {path}: no alphabetic words")
    return words
