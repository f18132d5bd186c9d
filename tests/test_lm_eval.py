"""Our checkpoints in lm-evaluation-harness's `hf` model, offline, on a task defined by local files.

    lm_eval --model hf --model_args pretrained=DIR,trust_remote_code=True --tasks TASK --include_path TASKS_DIR

Skipped when `lm_eval` is not installed (it is not a dependency of this package).
"""

import json
import random
import subprocess
import sys

import pytest
import torch
from eval_helpers import WORDS, save_base_model
from transformers import AutoModelForCausalLM, AutoTokenizer


pytest.importorskip("lm_eval")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TASK_YAML = """\
task: nanochat_toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def expected_accuracy(model, tokenizer, rows):
    """lm-eval's multiple-choice accuracy written out: the choice (after a space) with the largest summed
    log-likelihood given the question, context and continuation split on the whole string's tokens. The
    tokenizer's own default prepends <|bos|>, as nanochat does."""
    right = 0
    for row in rows:
        context = tokenizer.encode(row["question"])
        assert context[0] == tokenizer.bos_token_id
        scores = []
        for choice in row["choices"]:
            whole = tokenizer.encode(row["question"] + " " + choice)
            continuation = whole[len(context) :]
            with torch.no_grad():
                log_probs = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0].float(), -1)
            positions = range(len(context) - 1, len(whole) - 1)
            scores.append(sum(log_probs[p, t].item() for p, t in zip(positions, continuation, strict=True)))
        right += scores.index(max(scores)) == row["label"]
    return right / len(rows)


def test_lm_eval_hf_model_runs_our_checkpoint(tmp_path, tokenizer_dir):
    model_dir = save_base_model(tmp_path / "model", tokenizer_dir)
    rng = random.Random(1)
    rows = [
        {
            "question": " ".join(rng.choice(WORDS) for _ in range(4)),
            "choices": [" ".join(rng.choice(WORDS) for _ in range(2)) for _ in range(3)],
            "label": rng.randrange(3),
        }
        for _ in range(12)
    ]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "toy.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tasks / "toy.yaml").write_text(TASK_YAML.format(data=data))
    command = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    command += ["--model_args", f"pretrained={model_dir},trust_remote_code=True", "--tasks", "nanochat_toy_mc"]
    command += [
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = list((tmp_path / "out").rglob("results_*.json"))
    accuracy = json.loads(results_file.read_text())["results"]["nanochat_toy_mc"]["acc,none"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert accuracy == pytest.approx(expected_accuracy(model, tokenizer, rows))
