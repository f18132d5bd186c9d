"""The README.md model card written into every checkpoint and the final model folder."""

import json
from pathlib import Path


CARD_TEMPLATE = """---
library_name: transformers
tags:
- nanochat
- nanochat-hf
- text-generation
pipeline_tag: text-generation
---

# nanochat d{depth} base model ({step_note})

A nanochat generation-1 GPT ({parameters:,} parameters: depth {depth}, width {width}, {heads} heads,
vocabulary {vocab_size:,}, context {sequence_len:,}) pretrained with
nanochat-hf on the Hugging Face `Trainer`, with nanochat's Muon + AdamW optimizer
and learning-rate schedule.

Load it with its own modeling code (this package does not need to be installed):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
```

## Training run

{settings_table}

## Latest metrics

{metrics_table}
"""


def _flatten(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _table(rows: list[tuple[str, object]]) -> str:
    if not rows:
        return "(none yet)"
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {key} | {json.dumps(value) if not isinstance(value, str) else value} |" for key, value in rows]
    return "\n".join(lines)


def latest_metrics(log_history: list[dict]) -> dict:
    """The most recent value of every logged metric."""
    latest = {}
    for entry in log_history:
        latest.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return latest


def write_model_card(folder, settings: dict, log_history: list[dict], step: int, max_steps: int) -> Path:
    model = settings["model"]
    card = CARD_TEMPLATE.format(
        depth=model["depth"],
        width=model["width"],
        heads=model["heads"],
        vocab_size=model["vocab_size"],
        sequence_len=model["sequence_len"],
        parameters=model["parameters"],
        step_note=f"step {step:,} of {max_steps:,}",
        settings_table=_table(_flatten(settings)),
        metrics_table=_table(sorted(latest_metrics(log_history).items())),
    )
    from ..eval.report import model_card_report_section  # a report card from `nanochat-hf report` stays in

    card += model_card_report_section(folder)
    path = Path(folder) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
