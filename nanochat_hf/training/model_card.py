"""The README.md model card of every checkpoint and final folder, for every training stage.

`write_model_card` is the one writer: front matter for the Hub, a title, what the model is, how to use
it, the run's settings and the latest metrics. The stages differ only in their words
(`base_model_card`, `chat_model_card`).
"""

import json
from pathlib import Path

from ..eval.report import model_card_report_section


CARD_TEMPLATE = """---
library_name: {library}
tags:
{tags}
pipeline_tag: text-generation
---

# {title}

{description}

{usage}

## Training run

{settings_table}

## Latest metrics

{metrics_table}
"""

REMOTE_CODE_USAGE = """Load it with its own modeling code (this package does not need to be installed):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
```"""

CHAT_USAGE = """```bash
nanochat-hf chat PATH_OR_REPO --prompt "What is 12*34?"
```

```python
from transformers import pipeline
chat = pipeline("text-generation", model="PATH_OR_REPO", trust_remote_code=True)
print(chat([{"role": "user", "content": "Hi!"}])[0]["generated_text"][-1]["content"])
```

The plain pipeline does not run the calculator tool (a tool call's answer is never fed back); with
nanochat-hf installed, `pipeline_class=nanochat_hf.chat.tool_pipeline.NanoChatToolPipeline` adds the tool loop."""


def flatten_settings(settings: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested settings as (dotted.key, value) rows."""
    rows = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten_settings(value, f"{name}."))
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


def write_model_card(
    folder,
    *,
    title: str,
    description: str,
    usage: str,
    settings: dict,
    log_history: list[dict],
    tags: tuple[str, ...] = ("nanochat", "nanochat-hf", "text-generation"),
    library: str = "transformers",
) -> Path:
    card = CARD_TEMPLATE.format(
        library=library,
        tags="\n".join(f"- {tag}" for tag in tags),
        title=title,
        description=description,
        usage=usage,
        settings_table=_table(flatten_settings(settings)),
        metrics_table=_table(sorted(latest_metrics(log_history).items())),
    )
    card += model_card_report_section(folder)  # a report card written by `nanochat-hf report` stays in
    path = Path(folder) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


def base_model_card(settings: dict, step: int, max_steps: int) -> dict:
    """The words of a pretrained base model's card (keyword arguments of `write_model_card`)."""
    model = settings["model"]
    return {
        "title": f"nanochat d{model['depth']} base model (step {step:,} of {max_steps:,})",
        "description": (
            f"A nanochat generation-1 GPT ({model['parameters']:,} parameters: depth {model['depth']}, width "
            f"{model['width']}, {model['heads']} heads,\nvocabulary {model['vocab_size']:,}, context "
            f"{model['sequence_len']:,}) pretrained with\nnanochat-hf on the Hugging Face `Trainer`, with "
            "nanochat's Muon + AdamW optimizer\nand learning-rate schedule."
        ),
        "usage": REMOTE_CODE_USAGE,
    }


def chat_model_card(settings: dict, is_adapter: bool) -> dict:
    """The words of a fine-tuned chat model's (or LoRA adapter's) card."""
    what = (
        f"A LoRA adapter for `{settings['base_model']}` ({settings['method']})"
        if is_adapter
        else f"Fine-tuned from `{settings['base_model']}`"
    )
    stage = "midtraining" if settings["stage"] == "mid" else "SFT"
    return {
        "title": f"nanochat d{settings['model']['depth']} chat model ({stage})",
        "description": (
            f"{what} with nanochat-hf (trl `SFTTrainer`), in nanochat's chat format: stop token "
            "`<|assistant_end|>`,\ncalculator tool calls between `<|python_start|>` and `<|python_end|>`."
        ),
        "usage": CHAT_USAGE,
        "tags": ("nanochat", "nanochat-hf", "chat"),
        "library": "peft" if is_adapter else "transformers",
    }
