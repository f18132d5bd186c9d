"""The DCLM eval bundle that CORE is computed on: read, check, and select examples - before any model work.

A bundle is a folder (nanochat downloads it as `eval_bundle.zip`, ~162 MB) holding

- `core.yaml`: `icl_tasks`, a list of tasks with `label`, `icl_task_type` (`multiple_choice`, `schema` or
  `language_modeling`), `dataset_uri` (a path under `eval_data/`), `num_fewshot` (a list; its first
  value is used, as nanochat does) and optionally `continuation_delimiter` (default: one space);
- `eval_meta_data.csv`: a row per task with columns `Eval Task` (the label) and `Random baseline`, the
  accuracy of random guessing **in percent**;
- `eval_data/**.jsonl`: one example per line - multiple choice `{query, choices, gold}`, schema
  `{context_options, continuation, gold}`, language modeling `{context, continuation}`.

`load_bundle` accepts the folder (or one holding `eval_bundle/`), the zip file, a Hub dataset repository
id (fetched with `huggingface_hub.snapshot_download`), or `embedded` (a tiny bundle generated from Python's
documentation, at the end of this module), and checks every file, task and jsonl line; any
problem is a `UserInputError` naming the file, task, line or field.
"""

import atexit
import csv
import json
import os
import random
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_folder
from ..data.sources import EMBEDDED, open_text_source
from ..errors import UserInputError


CORE_YAML, META_CSV, DATA_DIR = "core.yaml", "eval_meta_data.csv", "eval_data"
NANOCHAT_BUNDLE_URL = "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
TASK_TYPES = ("multiple_choice", "schema", "language_modeling")
# Fields an example of each type needs, with the JSON type each must have.
EXAMPLE_FIELDS = {
    "multiple_choice": {"query": str, "choices": list, "gold": int},
    "schema": {"context_options": list, "continuation": str, "gold": int},
    "language_modeling": {"context": str, "continuation": str},
}
OPTIONS_FIELD = {"multiple_choice": "choices", "schema": "context_options"}
SELECTION_SEED = 1337  # nanochat shuffles each task with this seed before cropping to --max-per-task
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EMBEDDED_BUNDLE = "embedded"  # --eval-bundle embedded: generated here, see the end of this module
DEFAULT_EXAMPLES_PER_TASK = 64


@dataclass(frozen=True)
class CoreTask:
    label: str
    task_type: str
    num_fewshot: int
    continuation_delimiter: str
    random_baseline: float  # percent, as in eval_meta_data.csv
    data_path: Path
    examples: tuple  # the jsonl lines, in file order, checked

    def select(self, max_per_task: int = -1) -> list[dict]:
        """nanochat's subset: shuffle with Random(1337), then keep the first `max_per_task` (<= 0: all)."""
        data = list(self.examples)
        random.Random(SELECTION_SEED).shuffle(data)
        if max_per_task > 0:
            data = data[:max_per_task]
        if self.num_fewshot >= len(data):
            raise UserInputError(
                f"CORE task {self.label!r}: {self.num_fewshot}-shot needs more than {self.num_fewshot} examples "
                f"to draw from, but {len(data)} are evaluated (raise --max-per-task)"
            )
        return data


@dataclass(frozen=True)
class EvalBundle:
    root: Path
    tasks: tuple[CoreTask, ...]

    @property
    def labels(self) -> list[str]:
        return [task.label for task in self.tasks]


# ---------------------------------------------------------------------------------------------------------
# Locating the bundle


def _temporary_folder() -> Path:
    """A folder for an unpacked or generated bundle, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="nanochat-eval-bundle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _bundle_root(folder: Path) -> Path | None:
    for candidate in (folder, folder / "eval_bundle"):
        if (candidate / CORE_YAML).is_file():
            return candidate
    return None


def locate_bundle(spec: str | os.PathLike) -> Path:
    """The bundle folder for a local folder, a zip file, a Hub dataset id, or "embedded" (generated)."""
    text = os.fspath(spec)
    if text == EMBEDDED_BUNDLE:
        return write_embedded_bundle(_temporary_folder() / EMBEDDED_BUNDLE)
    path = Path(text).expanduser()
    if path.is_file() and zipfile.is_zipfile(path):
        target = _temporary_folder()
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
        root = _bundle_root(target)
        if root is None:
            raise UserInputError(f"--eval-bundle {path}: the zip holds no {CORE_YAML} (nor eval_bundle/{CORE_YAML})")
        return root
    if path.is_dir():
        root = _bundle_root(path)
        if root is None:
            raise UserInputError(
                f"--eval-bundle {path}: no {CORE_YAML} in this folder (nor in {path / 'eval_bundle'}); a DCLM eval "
                f"bundle has core.yaml, {META_CSV} and {DATA_DIR}/ (nanochat's: {NANOCHAT_BUNDLE_URL})"
            )
        return root
    if path.exists() or not _HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise UserInputError(f"--eval-bundle {text}: no such folder or zip file")
    return _download_bundle(text)


def _download_bundle(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id,
            repo_type="dataset",
            allow_patterns=[CORE_YAML, META_CSV, f"{DATA_DIR}/**", f"eval_bundle/{CORE_YAML}", "eval_bundle/**"],
        )
    except Exception as err:  # offline, unknown or gated repository: several exception types
        raise UserInputError(
            f"--eval-bundle {repo_id}: not a local folder, and the Hub dataset could not be fetched "
            f"({type(err).__name__}: {err}); pass a local bundle folder or zip (nanochat's: {NANOCHAT_BUNDLE_URL})"
        ) from None
    root = _bundle_root(Path(folder))
    if root is None:
        raise UserInputError(f"--eval-bundle {repo_id}: the Hub dataset holds no {CORE_YAML}")
    return root


# ---------------------------------------------------------------------------------------------------------
# Reading and checking


def _read_task_list(path: Path) -> list:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UserInputError(f"{path}: cannot read it as YAML ({err})") from None
    tasks = config.get("icl_tasks") if isinstance(config, dict) else None
    if not isinstance(tasks, list) or not tasks:
        raise UserInputError(f"{path}: expected a non-empty 'icl_tasks' list")
    return tasks


def _read_baselines(path: Path) -> dict[str, float]:
    if not path.is_file():
        raise UserInputError(f"{path}: missing (the random baselines of the CORE tasks, in percent)")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"Eval Task", "Random baseline"} - set(reader.fieldnames or ())
        if missing:
            raise UserInputError(f"{path}: missing column(s) {sorted(missing)}")
        baselines = {}
        for line, row in enumerate(reader, start=2):
            try:
                baselines[row["Eval Task"]] = float(row["Random baseline"])
            except (TypeError, ValueError):
                raise UserInputError(
                    f"{path} line {line}: 'Random baseline' {row['Random baseline']!r} is not a number"
                ) from None
    return baselines


def check_example(example, task_type: str, where: str) -> None:
    if not isinstance(example, dict):
        raise UserInputError(f"{where}: expected a JSON object, got {type(example).__name__}")
    for name, kind in EXAMPLE_FIELDS[task_type].items():
        if name not in example:
            needed = ", ".join(EXAMPLE_FIELDS[task_type])
            raise UserInputError(f"{where}: missing field {name!r} (a {task_type} example needs {needed})")
        value = example[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserInputError(f"{where}: field {name!r} must be a {kind.__name__}, got {type(value).__name__}")
    options = OPTIONS_FIELD.get(task_type)
    if options is not None:
        values = example[options]
        if len(values) < 2 or not all(isinstance(v, str) for v in values):
            raise UserInputError(f"{where}: field {options!r} must be a list of at least 2 strings")
        if not 0 <= example["gold"] < len(values):
            raise UserInputError(f"{where}: 'gold' {example['gold']} is not an index into {options!r}")


def read_examples(path: Path, task_type: str, label: str) -> tuple:
    if not path.is_file():
        raise UserInputError(f"CORE task {label!r}: data file {path} is missing")
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                example = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserInputError(f"{where}: not valid JSON ({err.msg})") from None
            check_example(example, task_type, where)
            examples.append(example)
    if not examples:
        raise UserInputError(f"CORE task {label!r}: {path} holds no examples")
    return tuple(examples)


def _task_from_entry(entry, index: int, root: Path, baselines: dict) -> CoreTask:
    config_path = root / CORE_YAML
    where = f"{config_path} icl_tasks[{index}]"
    if not isinstance(entry, dict):
        raise UserInputError(f"{where}: expected a mapping")
    for key in ("label", "icl_task_type", "dataset_uri", "num_fewshot"):
        if key not in entry:
            raise UserInputError(f"{where}: missing key {key!r}")
    label, task_type = str(entry["label"]), entry["icl_task_type"]
    where = f"{config_path} task {label!r}"
    if task_type not in TASK_TYPES:
        raise UserInputError(f"{where}: unknown icl_task_type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")
    shots = entry["num_fewshot"]
    shots = shots[0] if isinstance(shots, list) and shots else shots
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise UserInputError(f"{where}: num_fewshot must be a non-negative integer or a list of them")
    delimiter = entry.get("continuation_delimiter", " ")
    if not isinstance(delimiter, str):
        raise UserInputError(f"{where}: continuation_delimiter must be a string")
    if label not in baselines:
        raise UserInputError(f"{root / META_CSV}: no 'Random baseline' row for task {label!r}")
    data_path = root / DATA_DIR / str(entry["dataset_uri"])
    return CoreTask(
        label=label,
        task_type=task_type,
        num_fewshot=shots,
        continuation_delimiter=delimiter,
        random_baseline=baselines[label],
        data_path=data_path,
        examples=read_examples(data_path, task_type, label),
    )


def load_bundle(spec: str | os.PathLike, labels: list[str] | None = None) -> EvalBundle:
    """Open and check a bundle; `labels` keeps only those tasks (in the bundle's order)."""
    root = locate_bundle(spec)
    entries = _read_task_list(root / CORE_YAML)
    baselines = _read_baselines(root / META_CSV)
    known = [str(entry.get("label")) if isinstance(entry, dict) else None for entry in entries]
    if labels:
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise UserInputError(
                f"--core-tasks: {unknown} not in {root / CORE_YAML} (tasks: {', '.join(map(str, known))})"
            )
    tasks = tuple(
        _task_from_entry(entry, index, root, baselines)
        for index, entry in enumerate(entries)
        if not labels or known[index] in labels
    )
    duplicates = {label for label in known if known.count(label) > 1}
    if duplicates:
        raise UserInputError(f"{root / CORE_YAML}: task label(s) {sorted(duplicates)} appear more than once")
    return EvalBundle(root=root, tasks=tasks)


# ---------------------------------------------------------------------------------------------------------
# A tiny bundle made from the held-out documents of the embedded corpus (Python's own docs)
#
# The DCLM bundle is a 162 MB download; the CPU quickstart and offline checks need something that exists on
# every machine. `write_embedded_bundle` writes a bundle in the same format with one task of each type, from
# the validation split of the `embedded` source - documents the quickstart model never trained on:
# - pydoc_lambada (language modelling, 0-shot, LAMBADA-style): a docstring's first sentence without its
#   last word; the model must produce that word greedily;
# - pydoc_docstring (multiple choice, 3-shot): "name:" followed by its first docstring sentence or by that
#   of one of three other documents;
# - pydoc_owner (schema, 0-shot): which of two names a docstring sentence belongs to.
# Numbers on it say whether a small model learned anything from Python's documentation; they are not
# comparable with CORE on the DCLM tasks.

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")

EMBEDDED_CORE_YAML = """\
# A tiny CORE-format bundle from held-out Python documentation (nanochat_hf.eval.bundle.write_embedded_bundle).
icl_tasks:
- label: pydoc_lambada
  icl_task_type: language_modeling
  dataset_uri: pydoc_lambada.jsonl
  num_fewshot: [0]
- label: pydoc_docstring
  icl_task_type: multiple_choice
  dataset_uri: pydoc_docstring.jsonl
  num_fewshot: [3]
- label: pydoc_owner
  icl_task_type: schema
  dataset_uri: pydoc_owner.jsonl
  num_fewshot: [0]
"""
EMBEDDED_BASELINES = {"pydoc_lambada": 0, "pydoc_docstring": 25, "pydoc_owner": 50}


def _entries() -> list[tuple[str, str]]:
    """(name, first sentence) of every held-out document with a usable first sentence."""
    entries, seen = [], set()
    for document in open_text_source(EMBEDDED).iter_documents("validation"):
        name, _, body = document.partition("\n\n")
        sentence = " ".join(_SENTENCE_END.split(body.strip(), maxsplit=1)[0].split())
        if len(sentence.split()) >= 4 and sentence not in seen and "\n" not in name:
            seen.add(sentence)
            entries.append((name.strip(), sentence))
    return entries


def embedded_tasks(examples_per_task: int = DEFAULT_EXAMPLES_PER_TASK, seed: int = 0) -> dict[str, list[dict]]:
    """The three tasks' examples, the same for the same arguments on the same Python build."""
    entries = _entries()
    rng = random.Random(seed)
    picked = rng.sample(entries, min(examples_per_task, len(entries)))
    lambada, docstring, owner = [], [], []
    for name, sentence in picked:
        *head, last = sentence.split(" ")
        lambada.append({"context": f"{name}\n\n{' '.join(head)}", "continuation": last})
        distractors = rng.sample([s for n, s in entries if s != sentence], 3)
        choices = [sentence, *distractors]
        rng.shuffle(choices)
        docstring.append({"query": f"{name}:", "choices": choices, "gold": choices.index(sentence)})
        other = rng.choice([n for n, _ in entries if n != name])
        options = [f"{name}:", f"{other}:"]
        rng.shuffle(options)
        owner.append({"context_options": options, "continuation": sentence, "gold": options.index(f"{name}:")})
    return {"pydoc_lambada": lambada, "pydoc_docstring": docstring, "pydoc_owner": owner}


def write_embedded_bundle(folder, examples_per_task: int = DEFAULT_EXAMPLES_PER_TASK, seed: int = 0) -> Path:
    """Write the bundle to the new folder `folder` (atomically); returns it."""
    tasks = embedded_tasks(examples_per_task, seed)
    with atomic_folder(folder) as staging:
        (staging / CORE_YAML).write_text(EMBEDDED_CORE_YAML, encoding="utf-8")
        rows = "".join(f"{label},{baseline}\n" for label, baseline in EMBEDDED_BASELINES.items())
        (staging / META_CSV).write_text(f"Eval Task,Random baseline\n{rows}", encoding="utf-8")
        (staging / DATA_DIR).mkdir()
        for label, examples in tasks.items():
            lines = "".join(json.dumps(example) + "\n" for example in examples)
            (staging / DATA_DIR / f"{label}.jsonl").write_text(lines, encoding="utf-8")
    return Path(folder)
