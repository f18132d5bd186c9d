"""CORE scoring against a computation written out here: one direct forward pass per sequence, no batching.

The tiny model has random weights, so its choices are arbitrary but fixed; the language-modelling task gets
some continuations that are the model's own greedy words, so its accuracy is neither 0 nor 1.
"""

import random

import pytest
import torch
from eval_helpers import core_examples, save_base_model, with_greedy_continuations, write_bundle
from transformers import AutoTokenizer

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.bundle import load_bundle
from nanochat_hf.eval.core import (
    bos_token_id,
    common_prefix_length,
    common_suffix_length,
    crop_left,
    fewshot_examples,
    prepare_core,
    render_prompts,
    score_core,
)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_dir):
    return save_base_model(tmp_path_factory.mktemp("core") / "model", tokenizer_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return NanoChatHFForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, model, tokenizer):
    examples = core_examples(seed=3, count=24)
    examples["language_modeling"] = with_greedy_continuations(examples["language_modeling"], model, tokenizer)
    return write_bundle(tmp_path_factory.mktemp("bundle"), examples)


# ---------------------------------------------------------------------------------------------------------
# Prompt rendering, exactly as nanochat renders it


def test_prompts_of_each_task_type():
    mc_shots = [{"query": "Q1?", "choices": ["a1", "b1"], "gold": 1}, {"query": "Q2?", "choices": ["a2"], "gold": 0}]
    mc = render_prompts("multiple_choice", {"query": "Q3?", "choices": ["x", "y"], "gold": 0}, " ", mc_shots)
    assert mc == ["Q1? b1\n\nQ2? a2\n\nQ3? x", "Q1? b1\n\nQ2? a2\n\nQ3? y"]
    lm_shots = [{"context": "  ctx1 ", "continuation": "cont1"}]
    lm = render_prompts("language_modeling", {"context": "ctx3 ", "continuation": "cont3"}, " ", lm_shots)
    assert lm == ["ctx1 cont1\n\nctx3", "ctx1 cont1\n\nctx3 cont3"]
    schema_shots = [{"context_options": ["A.", "B."], "continuation": "c1", "gold": 1}]
    schema = render_prompts("schema", {"context_options": ["C.", "D."], "continuation": "c2"}, "\n", schema_shots)
    assert schema == ["B.\nc1\n\nC.\nc2", "B.\nc1\n\nD.\nc2"]


def test_fewshot_examples_exclude_the_item_and_follow_the_seed():
    data = [{"i": i} for i in range(10)]
    for idx in range(10):
        shots = fewshot_examples(data, idx, 3)
        assert data[idx] not in shots and len({s["i"] for s in shots}) == 3
        assert shots == fewshot_examples(data, idx, 3)  # deterministic per index
    assert fewshot_examples(data, 0, 3) != fewshot_examples(data, 1, 3)
    assert fewshot_examples(data, 4, 0) == []


def test_common_prefix_and_suffix_and_left_crop():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_suffix_length([[9, 1, 7, 8], [2, 7, 8], [5, 5, 8]]) == 1
    assert crop_left([1, 2, 3, 4, 5, 6], (4, 6), 4) == ([3, 4, 5, 6], (2, 4))
    assert crop_left([1, 2, 3], (1, 3), None) == ([1, 2, 3], (1, 3))
    with pytest.raises(UserInputError, match="does not fit"):
        crop_left([1, 2, 3, 4, 5, 6], (1, 6), 4)


# ---------------------------------------------------------------------------------------------------------
# The hand-checked computation


def _nll_and_greedy(model, ids, start, end):
    """Per-token losses and greedy match of ids[start:end], from one unbatched forward pass."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    targets = ids[start:end]
    losses = [-log_probs[p - 1, t].item() for p, t in zip(range(start, end), targets, strict=True)]
    greedy = all(int(log_probs[p - 1].argmax()) == t for p, t in zip(range(start, end), targets, strict=True))
    return sum(losses) / len(losses), greedy


def expected_accuracy(model, tokenizer, examples, task_type, shots, delimiter, max_length=None):
    data = list(examples)
    random.Random(1337).shuffle(data)
    bos = tokenizer.bos_token_id

    def tokens(text):
        return [bos, *tokenizer.encode(text, add_special_tokens=False)]

    right = 0
    for idx, item in enumerate(data):
        others = [i for i in range(len(data)) if i != idx]
        fewshot = [data[i] for i in random.Random(1234 + idx).sample(others, shots)] if shots else []
        if task_type == "multiple_choice":
            head = "".join(f"{s['query']}{delimiter}{s['choices'][s['gold']]}\n\n" for s in fewshot)
            seqs = [tokens(head + item["query"] + delimiter + c) for c in item["choices"]]
            start = next(
                p for p in range(len(seqs[0]) + 1) if p == min(map(len, seqs)) or len({s[p] for s in seqs}) > 1
            )
            if max_length is not None:  # keep the last max_length tokens, the span moves with them
                cuts = [max(0, len(s) - max_length) for s in seqs]
                means = [
                    _nll_and_greedy(model, s[c:], start - c, len(s) - c)[0] for s, c in zip(seqs, cuts, strict=True)
                ]
            else:
                means = [_nll_and_greedy(model, s, start, len(s))[0] for s in seqs]
            right += means.index(min(means)) == item["gold"]
        elif task_type == "schema":
            head = "".join(f"{s['context_options'][s['gold']]}{delimiter}{s['continuation']}\n\n" for s in fewshot)
            seqs = [tokens(head + o + delimiter + item["continuation"]) for o in item["context_options"]]
            suffix = 0
            while suffix < min(map(len, seqs)) - 1 and len({s[-1 - suffix] for s in seqs}) == 1:
                suffix += 1
            means = [_nll_and_greedy(model, s, len(s) - suffix, len(s))[0] for s in seqs]
            right += means.index(min(means)) == item["gold"]
        else:
            head = "".join(f"{s['context'].strip()}{delimiter}{s['continuation']}\n\n" for s in fewshot)
            without = tokens((head + item["context"].strip() + delimiter).strip())
            full = tokens(head + item["context"].strip() + delimiter + item["continuation"])
            right += _nll_and_greedy(model, full, len(without), len(full))[1]
    return right / len(data)


def test_accuracies_equal_the_hand_computation(model, tokenizer, bundle_dir):
    bundle = load_bundle(bundle_dir)
    result = score_core(
        model, prepare_core(bundle, tokenizer), bos_token_id(tokenizer), batch_size=5, show_progress=False
    )
    for task in bundle.tasks:
        expected = expected_accuracy(
            model, tokenizer, task.examples, task.task_type, task.num_fewshot, task.continuation_delimiter
        )
        assert result.tasks[task.label].accuracy == pytest.approx(expected, abs=1e-12), task.label
    lm = result.tasks["toy_lm"].accuracy
    assert 0 < lm < 1, "the greedy continuations should make some, not all, language-modelling examples right"
    centered = {label: t.centered for label, t in result.tasks.items()}
    assert centered["toy_mc"] == pytest.approx((result.tasks["toy_mc"].accuracy - 0.25) / 0.75)
    assert centered["toy_schema"] == pytest.approx((result.tasks["toy_schema"].accuracy - 0.5) / 0.5)
    assert result.core_metric == pytest.approx(sum(centered.values()) / 3)


def test_results_do_not_depend_on_the_batch_size(model, tokenizer, bundle_dir):
    prepared = prepare_core(load_bundle(bundle_dir), tokenizer)
    runs = [
        score_core(model, prepared, bos_token_id(tokenizer), batch_size=size, show_progress=False)
        for size in (1, 4, 64)
    ]
    for run in runs[1:]:
        for label, task in run.tasks.items():
            assert task.predictions == runs[0].tasks[label].predictions, label
        assert run.core_metric == runs[0].core_metric


def test_max_per_task_keeps_the_first_examples_of_the_1337_shuffle(model, tokenizer, bundle_dir):
    bundle = load_bundle(bundle_dir)
    full = prepare_core(bundle, tokenizer)
    cropped = prepare_core(bundle, tokenizer, max_per_task=8)
    for whole, part in zip(full, cropped, strict=True):
        assert len(part.examples) == 8
        shuffled = list(whole.task.examples)
        random.Random(1337).shuffle(shuffled)
        assert part.task.select(8) == shuffled[:8]


def test_long_sequences_are_cropped_from_the_left(model, tokenizer, bundle_dir):
    """With a 24-token limit the prompts lose their start; the spans (at the end) are still scored."""
    prepared = prepare_core(load_bundle(bundle_dir, ["toy_mc"]), tokenizer)
    assert max(len(r) for e in prepared[0].examples for r in e.rows) > 24
    cropped = score_core(model, prepared, bos_token_id(tokenizer), max_length=24, show_progress=False)
    task = prepared[0].task
    expected = expected_accuracy(model, tokenizer, task.examples, task.task_type, 2, " ", max_length=24)
    assert cropped.tasks["toy_mc"].accuracy == pytest.approx(expected, abs=1e-12)


def test_any_causal_lm_with_a_position_limit_is_cropped(tmp_path, tokenizer, bundle_dir):
    """A GPT-2 (absolute positions, 32 of them) through the same path: its sequences are cropped to fit."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=1, n_head=2)
    ).eval()
    prepared = prepare_core(load_bundle(bundle_dir, ["toy_mc"]), tokenizer)
    assert max(len(r) for e in prepared[0].examples for r in e.rows) > 32  # would not fit uncropped
    result = score_core(gpt2, prepared, bos_token_id(tokenizer), show_progress=False)
    task = prepared[0].task
    expected = expected_accuracy(gpt2, tokenizer, task.examples, task.task_type, 2, " ", max_length=32)
    assert result.tasks["toy_mc"].accuracy == pytest.approx(expected, abs=1e-12)
