"""From per-example outcomes to the reported numbers: accuracy, centered accuracy, CORE and ChatCORE.

Pure functions over lists, shared by the evaluation runners and the `evaluate` modules in `metrics/`.

- centered accuracy = (accuracy - baseline) / (1 - baseline): 0 at random guessing, 1 when perfect.
  CORE reads its baselines in percent from the bundle's `eval_meta_data.csv`; ChatCORE uses 25 % for the
  four-way multiple-choice tasks and 0 for the open-ended ones.
- CORE = the mean of the tasks' centered accuracies (22 tasks in the DCLM bundle).
- ChatCORE = the mean centered accuracy over nanochat's chat tasks. Generation 1 (2025-11) has six tasks,
  SpellingBee included; its first published numbers (d20, 2025-10) and generation 2 use the five others.
  `chatcore_metric` is given when all six are present, `chatcore_metric_5` when the five are.
"""

from collections import defaultdict


CHAT_BASELINES = {
    "ARC-Easy": 0.25,
    "ARC-Challenge": 0.25,
    "MMLU": 0.25,
    "GSM8K": 0.0,
    "HumanEval": 0.0,
    "SpellingBee": 0.0,
}
CHATCORE_TASKS = tuple(CHAT_BASELINES)  # generation 1: all six
CHATCORE_5_TASKS = CHATCORE_TASKS[:5]  # without SpellingBee: generation 2 and the first d20 numbers


def centered(accuracy: float, baseline: float) -> float:
    """(accuracy - baseline) / (1 - baseline), with the baseline as a fraction."""
    return (accuracy - baseline) / (1.0 - baseline)


def _by_task(values, tasks) -> dict[str, list]:
    if len(values) != len(tasks):
        raise ValueError(f"{len(values)} outcomes but {len(tasks)} task names")
    grouped = defaultdict(list)
    for value, task in zip(values, tasks, strict=True):
        grouped[task].append(value)
    return dict(grouped)


def core_scores(predictions, references, tasks, random_baselines: dict) -> dict:
    """CORE from per-example predictions and gold answers (an example is right when they are equal).

    For multiple-choice and schema tasks the prediction is the chosen option's index and the reference
    the gold index; for language-modelling tasks 1 (the greedy continuation matched) or 0, against 1.
    `random_baselines` maps each task label to its random baseline in percent.
    """
    correct = [float(p == r) for p, r in zip(predictions, references, strict=True)]
    accuracy = {task: sum(v) / len(v) for task, v in _by_task(correct, tasks).items()}
    missing = [task for task in accuracy if task not in random_baselines]
    if missing:
        raise ValueError(f"no random baseline for task(s) {missing}")
    centered_accuracy = {task: centered(acc, 0.01 * random_baselines[task]) for task, acc in accuracy.items()}
    return {
        "accuracy": accuracy,
        "centered": centered_accuracy,
        "core_metric": sum(centered_accuracy.values()) / len(centered_accuracy),
    }


def chatcore_scores(correct, tasks, baselines: dict = CHAT_BASELINES) -> dict:
    """Accuracy and centered accuracy per chat task from per-problem outcomes (1 = passed), and ChatCORE."""
    accuracy = {task: sum(map(float, v)) / len(v) for task, v in _by_task(list(correct), tasks).items()}
    centered_accuracy = {task: centered(acc, baselines.get(task, 0.0)) for task, acc in accuracy.items()}

    def mean_over(names):
        if not all(name in centered_accuracy for name in names):
            return None
        return sum(centered_accuracy[name] for name in names) / len(names)

    return {
        "accuracy": accuracy,
        "centered": centered_accuracy,
        "chatcore_metric": mean_over(CHATCORE_TASKS),
        "chatcore_metric_5": mean_over(CHATCORE_5_TASKS),
    }
