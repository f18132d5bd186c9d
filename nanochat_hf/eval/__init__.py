"""Evaluation: CORE, bits per byte and ChatCORE, as nanochat computes them.

- `bundle`: the DCLM eval bundle (core.yaml, eval_meta_data.csv, eval_data/*.jsonl), checked before use,
  and a tiny bundle made from Python's documentation, for offline runs.
- `core`: nanochat's CORE scoring, batched and sharded over processes; `callback`: `CoreEvalCallback`.
- `chat_tasks` and `chatcore`: ARC-Easy/Challenge, MMLU, GSM8K, HumanEval, SpellingBee and ChatCORE;
  `sandbox`: where HumanEval's programs run (only when the user opts in).
- `bpb`: bits per byte of any model on any text source.
- `scores`: the aggregation (centered accuracy, CORE, ChatCORE), also exposed as `evaluate` modules in
  `metrics/` (`evaluate.load(metric_path("core"))`, offline).
- `runner`: `nanochat-hf eval` / `accelerate launch -m nanochat_hf.eval`; `report`: the report card.

Importing this package is cheap (no torch); import the submodules for the functions.
"""

from pathlib import Path


METRICS_DIR = Path(__file__).resolve().parent / "metrics"
METRIC_NAMES = ("core", "chatcore", "bpb")


def metric_path(name: str) -> str:
    """The folder of one of this package's `evaluate` modules, for `evaluate.load(...)`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
    return str(METRICS_DIR / name)


def load_metric(name: str, **kwargs):
    """`evaluate.load` of one of this package's metrics (a local module: nothing is fetched)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
