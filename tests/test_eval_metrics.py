"""The `evaluate` modules of this package, loaded from their local folders (nothing from the Hub)."""

import math

import pytest
from eval_helpers import core_examples, save_base_model, write_bundle
from transformers import AutoTokenizer

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.eval import METRIC_NAMES, load_metric, metric_path
from nanochat_hf.eval.bundle import load_bundle
from nanochat_hf.eval.core import evaluate_core


def test_core_metric_equals_the_scorers_result(tmp_path, tokenizer_dir):
    model_dir = save_base_model(tmp_path / "model", tokenizer_dir)
    model = NanoChatHFForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bundle = load_bundle(write_bundle(tmp_path / "bundle", core_examples(seed=5, count=12)))
    result = evaluate_core(model, tokenizer, bundle, show_progress=False)
    core = load_metric("core")
    for label, task in result.tasks.items():  # piece by piece, as a distributed evaluation would add them
        core.add_batch(predictions=task.predictions, references=task.references, tasks=[label] * len(task.predictions))
    scores = core.compute(random_baselines={t.label: t.random_baseline for t in bundle.tasks})
    assert scores["core_metric"] == pytest.approx(result.core_metric)
    assert scores["accuracy"] == pytest.approx({label: t.accuracy for label, t in result.tasks.items()})


def test_core_metric_by_hand():
    scores = load_metric("core").compute(
        predictions=[0, 2, 1, 0],
        references=[0, 1, 1, 1],
        tasks=["a", "a", "b", "b"],
        random_baselines={"a": 25, "b": 0},
    )
    assert scores["accuracy"] == {"a": 0.5, "b": 0.5}
    assert scores["centered"] == pytest.approx({"a": (0.5 - 0.25) / 0.75, "b": 0.5})
    assert scores["core_metric"] == pytest.approx(((0.5 - 0.25) / 0.75 + 0.5) / 2)


def test_chatcore_metric_means_six_and_five_tasks():
    names = ["ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee"]
    outcomes = {
        "ARC-Easy": [1, 1, 0, 0],
        "ARC-Challenge": [1, 0, 0, 0],
        "MMLU": [1, 1, 1, 0],
        "GSM8K": [1, 0],
        "HumanEval": [0, 0, 1],
        "SpellingBee": [1, 1, 1, 0],
    }
    predictions = [v for name in names for v in outcomes[name]]
    tasks = [name for name in names for _ in outcomes[name]]
    scores = load_metric("chatcore").compute(predictions=predictions, tasks=tasks)
    centered = {
        "ARC-Easy": 1 / 3,
        "ARC-Challenge": 0.0,
        "MMLU": 2 / 3,
        "GSM8K": 0.5,
        "HumanEval": 1 / 3,
        "SpellingBee": 0.75,
    }
    assert scores["centered"] == pytest.approx(centered)
    assert scores["chatcore_metric"] == pytest.approx(sum(centered.values()) / 6)
    assert scores["chatcore_metric_5"] == pytest.approx(sum(centered[n] for n in names[:5]) / 5)
    partial = load_metric("chatcore").compute(predictions=[1, 0], tasks=["GSM8K", "GSM8K"])
    assert partial["chatcore_metric"] is None and partial["accuracy"] == {"GSM8K": 0.5}


def test_bpb_metric_divides_the_sums_once():
    bpb = load_metric("bpb")
    bpb.add_batch(predictions=[10.0, 2.0], references=[6, 2])
    bpb.add_batch(predictions=[0.5], references=[0])
    scores = bpb.compute()
    assert scores["bpb"] == pytest.approx(12.5 / (math.log(2) * 8)) and scores["bytes"] == 8
    assert load_metric("bpb").compute(predictions=[1.0], references=[0])["bpb"] == math.inf


def test_metric_paths():
    assert METRIC_NAMES == ("core", "chatcore", "bpb")
    assert metric_path("core").endswith("metrics/core")
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("accuracy")
