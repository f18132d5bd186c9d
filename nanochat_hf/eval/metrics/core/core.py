"""CORE (DCLM, arXiv 2406.11794) as an `evaluate` metric: per-task accuracy, centered accuracy, their mean.

Load it from this package, offline: `evaluate.load(nanochat_hf.eval.metric_path("core"))`.
"""

import datasets
import evaluate

from nanochat_hf.eval.scores import core_scores


_CITATION = """\
@article{li2024datacomplm,
  title={DataComp-LM: In search of the next generation of training sets for language models},
  author={Li, Jeffrey and others},
  journal={arXiv preprint arXiv:2406.11794},
  year={2024}
}
"""

_DESCRIPTION = """\
CORE is the mean centered accuracy over the DCLM in-context-learning tasks (22 in the full bundle), the
metric nanochat reports for base models (GPT-2 1.5B: 0.2565). A task's centered accuracy is
(accuracy - 0.01 b) / (1 - 0.01 b), b being its random baseline in percent, so 0 means chance and 1
perfect. This module aggregates per-example outcomes; `nanochat_hf.eval.core.score_core` produces them
from a model and a bundle exactly as nanochat scores them.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): per example, the chosen option (multiple choice, schema), or 1 when the
        greedy continuation matched and 0 when not (language modelling).
    references (list of int): the gold option (1 for language modelling).
    tasks (list of str): the task label of each example.
    random_baselines (dict): task label -> random baseline in percent (the bundle's eval_meta_data.csv).
Returns:
    accuracy (dict): task -> accuracy; centered (dict): task -> centered accuracy; core_metric (float).
Examples:
    >>> core = evaluate.load(nanochat_hf.eval.metric_path("core"))
    >>> core.compute(predictions=[0, 2, 1, 0], references=[0, 1, 1, 1], tasks=["a", "a", "b", "b"],
    ...              random_baselines={"a": 25, "b": 0})["core_metric"]
    0.41666666666666663
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Core(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "tasks": datasets.Value("string"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2406.11794", "https://github.com/karpathy/nanochat"],
        )

    def _compute(self, predictions, references, tasks, random_baselines=None):
        if random_baselines is None:
            raise ValueError("core: pass random_baselines={task label: random baseline in percent}")
        return core_scores(predictions, references, tasks, random_baselines)
