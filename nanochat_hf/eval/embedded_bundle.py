"""A tiny CORE bundle made from the held-out documents of the embedded corpus (Python's own docs).

The DCLM bundle is a 162 MB download; the CPU quickstart and offline checks need something that exists
on every machine. This writes a bundle in the same format (`core.yaml`, `eval_meta_data.csv`,
`eval_data/*.jsonl`) with one task of each type, built from the validation split of the `embedded`
source - documents the quickstart model never trained on:

- `pydoc_lambada` (language modelling, 0-shot, LAMBADA-style): a docstring's first sentence without its
  last word; the model must produce that word greedily.
- `pydoc_docstring` (multiple choice, 3-shot): "name:" followed by its first docstring sentence or by that
  of one of three other documents.
- `pydoc_owner` (schema, 0-shot): which of two names a docstring sentence belongs to.

Numbers on it say whether a small model learned anything from Python's documentation; they are not
comparable with CORE on the DCLM tasks.
"""

import json
import random
import re
from pathlib import Path

from ..atomic import atomic_folder
from .bundle import CORE_YAML, DATA_DIR, META_CSV


EMBEDDED_BUNDLE = "embedded"
DEFAULT_EXAMPLES_PER_TASK = 64
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")

CORE_YAML_TEXT = """\
# A tiny CORE-format bundle from held-out Python documentation (nanochat_hf.eval.embedded_bundle).
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
BASELINES = {"pydoc_lambada": 0, "pydoc_docstring": 25, "pydoc_owner": 50}


def _entries() -> list[tuple[str, str]]:
    """(name, first sentence) of every held-out document with a usable first sentence."""
    from ..data.sources import EMBEDDED, open_text_source

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
        (staging / CORE_YAML).write_text(CORE_YAML_TEXT, encoding="utf-8")
        rows = "".join(f"{label},{baseline}\n" for label, baseline in BASELINES.items())
        (staging / META_CSV).write_text(f"Eval Task,Random baseline\n{rows}", encoding="utf-8")
        (staging / DATA_DIR).mkdir()
        for label, examples in tasks.items():
            lines = "".join(json.dumps(example) + "\n" for example in examples)
            (staging / DATA_DIR / f"{label}.jsonl").write_text(lines, encoding="utf-8")
    return Path(folder)
