"""ChatCORE (nanochat) as an `evaluate` metric: per-task accuracy, centered accuracy and their mean.

Load it from this package, offline: `evaluate.load(nanochat_hf.eval.metric_path("chatcore"))`.
"""

import datasets
import evaluate

from nanochat_hf.eval.scores import CHAT_BASELINES, chatcore_scores


_CITATION = """\
@misc{nanochat,
  author = {Andrej Karpathy},
  title = {nanochat: The best ChatGPT that \\$100 can buy},
  year = {2025},
  howpublished = {https://github.com/karpathy/nanochat}
}
"""

_DESCRIPTION = """\
ChatCORE is nanochat's score for chat models: the mean centered accuracy over ARC-Easy, ARC-Challenge and
MMLU (baseline 25 %), GSM8K, HumanEval and SpellingBee (baseline 0). `chatcore_metric` averages all six
(nanochat 2025-11), `chatcore_metric_5` the five without SpellingBee (nanochat's first d20 numbers and
its 2026 version); each is None unless all its tasks are present. This module aggregates per-problem
outcomes; `nanochat_hf.eval.chatcore.evaluate_chat` produces them from a model.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): 1 when the model solved the problem, else 0.
    tasks (list of str): the task of each problem, in nanochat's spelling ("ARC-Easy", "GSM8K", ...).
    baselines (dict, optional): task -> random baseline as a fraction (default: nanochat's).
Returns:
    accuracy (dict), centered (dict), chatcore_metric (float or None), chatcore_metric_5 (float or None).
Examples:
    >>> chatcore = evaluate.load(nanochat_hf.eval.metric_path("chatcore"))
    >>> chatcore.compute(predictions=[1, 0, 1, 1], tasks=["ARC-Easy", "ARC-Easy", "GSM8K", "GSM8K"])["centered"]
    {'ARC-Easy': 0.3333333333333333, 'GSM8K': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chatcore(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "tasks": datasets.Value("string")}),
            reference_urls=["https://github.com/karpathy/nanochat"],
        )

    def _compute(self, predictions, tasks, baselines=None):
        return chatcore_scores(predictions, tasks, baselines or CHAT_BASELINES)
