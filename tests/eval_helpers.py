"""A tiny base model and a hand-written CORE bundle for the evaluation tests (real components only)."""

import json
import random
from pathlib import Path

import torch


WORDS = "the cat sat on a mat dog ran far away big small red blue green house tree river stone".split()


def save_base_model(folder, tokenizer_dir, seed: int = 0) -> Path:
    """A depth-2 nanochat with random weights and the tests' 512-token tokenizer, saved as a model folder."""
    from helpers import randomize_
    from transformers import AutoTokenizer

    from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = NanoChatHFConfig(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=len(tokenizer), sequence_len=64)
    config.bos_token_id = tokenizer.bos_token_id
    torch.manual_seed(seed)
    model = randomize_(NanoChatHFForCausalLM(config), seed=seed, scale=0.2)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _sentence(rng, low, high) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def core_examples(seed: int = 0, count: int = 24) -> dict[str, list[dict]]:
    """Examples of the three CORE task types (gold answers at random)."""
    rng = random.Random(seed)
    multiple_choice = [
        {
            "query": f"{_sentence(rng, 3, 5)}?",
            "choices": [_sentence(rng, 1, 3) for _ in range(4)],
            "gold": rng.randrange(4),
        }
        for _ in range(count)
    ]
    schema = [
        {
            "context_options": [_sentence(rng, 2, 4), _sentence(rng, 2, 4)],
            "continuation": _sentence(rng, 2, 3),
            "gold": rng.randrange(2),
        }
        for _ in range(count)
    ]
    language_modeling = [
        {"context": _sentence(rng, 3, 6) + " ", "continuation": rng.choice(WORDS)} for _ in range(count)
    ]
    return {"multiple_choice": multiple_choice, "schema": schema, "language_modeling": language_modeling}


CORE_YAML = """\
icl_tasks:
- label: toy_mc
  icl_task_type: multiple_choice
  dataset_uri: toy/mc.jsonl
  num_fewshot: [2]
- label: toy_schema
  icl_task_type: schema
  dataset_uri: toy/schema.jsonl
  num_fewshot: [1]
  continuation_delimiter: "\\n"
- label: toy_lm
  icl_task_type: language_modeling
  dataset_uri: toy/lm.jsonl
  num_fewshot: [0]
"""
TASK_FILES = {"multiple_choice": "mc", "schema": "schema", "language_modeling": "lm"}
BASELINES = {"toy_mc": 25.0, "toy_schema": 50.0, "toy_lm": 0.0}


def write_bundle(root, examples: dict[str, list[dict]], core_yaml: str = CORE_YAML, baselines=BASELINES) -> Path:
    root = Path(root)
    (root / "eval_data" / "toy").mkdir(parents=True, exist_ok=True)
    (root / "core.yaml").write_text(core_yaml, encoding="utf-8")
    rows = "".join(f"{label},{value}\n" for label, value in baselines.items())
    (root / "eval_meta_data.csv").write_text(f"Eval Task,Random baseline\n{rows}", encoding="utf-8")
    for task_type, name in TASK_FILES.items():
        lines = "".join(json.dumps(example) + "\n" for example in examples[task_type])
        (root / "eval_data" / "toy" / f"{name}.jsonl").write_text(lines, encoding="utf-8")
    return root


def with_greedy_continuations(examples: list[dict], model, tokenizer, every: int = 2) -> list[dict]:
    """Language-modelling examples where every `every`-th continuation is the model's own greedy next word.

    The continuation is taken from two greedily generated tokens when they decode to " word" and re-encode to
    the same tokens after the context, so that the model gets those examples right and the others (random
    words) almost surely wrong: the task's accuracy is then neither 0 nor 1.
    """
    changed = []
    for index, example in enumerate(examples):
        context = example["context"].strip()
        ids = [tokenizer.bos_token_id, *tokenizer.encode(context, add_special_tokens=False)]
        if index % every == 0:
            with torch.no_grad():
                for _ in range(2):
                    ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            text = tokenizer.decode(ids[-2:])
            rebuilt = tokenizer.encode(context + text, add_special_tokens=False)
            if text.startswith(" ") and text[1:].strip() == text[1:] and rebuilt == ids[1:]:
                example = {"context": example["context"], "continuation": text[1:]}
        changed.append(example)
    return changed
