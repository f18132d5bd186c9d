"""ChatCORE tasks: categorical scoring against a direct computation, GSM8K through the calculator tool loop,
HumanEval through the sandbox (and never without the opt-in), SpellingBee, and the errors.

Where a test needs the model to write something (a tool call, a program), its `generate()` is driven by a
logits processor that leaves one token possible at each step; the engine, the tool and the grading run
for real. Rows are written to local jsonl files in the Hub datasets' own columns.
"""

import json

import pytest
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from transformers import LogitsProcessor, LogitsProcessorList

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.chat_tasks import (
    check_tokenizer_for_tasks,
    completion_code,
    final_answer,
    humaneval_program,
    leading_imports,
    load_chat_task,
)
from nanochat_hf.eval.chatcore import evaluate_categorical, evaluate_chat, evaluate_generative
from nanochat_hf.eval.sandbox import CodeExecutionDisabled, Sandbox
from nanochat_hf.tokenizer import render_for_completion


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ARC_ROWS = [
    {
        "id": f"q{i}",
        "question": f"Which of these is item {i}?",
        "choices": {
            "text": [f"item {i}", f"thing {i + 1}", f"stone {i + 2}", f"tree {i}"],
            "label": ["A", "B", "C", "D"],
        },
        "answerKey": "ABCD"[i % 4],
    }
    for i in range(11)
]
MMLU_ROWS = [
    {
        "question": f"What is {i} plus one?",
        "subject": "math",
        "choices": [str(i + k - i % 4 + 1) for k in range(4)],
        "answer": i % 4,
    }
    for i in range(12)
]
GSM8K_ROWS = [
    {"question": "What is 37 times 43?", "answer": "37*43 = <<37*43=1591>>1591\n#### 1591"},
    {"question": "What is 37 times 43, plus one?", "answer": "37*43 = <<37*43=1591>>1591, +1 is 1,592\n#### 1,592"},
]
HUMANEVAL_ROWS = [
    {
        "task_id": "t/0",
        "prompt": 'import math\n\n\ndef add(a, b):\n    """Add two numbers."""\n',
        "canonical_solution": "    return a + b\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "entry_point": "add",
    },
    {
        "task_id": "t/1",
        "prompt": 'def add(a, b):\n    """Add, then double."""\n',
        "canonical_solution": "    return 2 * (a + b)\n",
        "test": "def check(candidate):\n    assert candidate(2, 3) == 10\n",
        "entry_point": "add",
    },
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("chat") / "model", random_weights=True)


@pytest.fixture(scope="module")
def model(model_dir):
    return NanoChatHFForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


def text_ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def special(tokenizer, name):
    return tokenizer.convert_tokens_to_ids(f"<|{name}|>")


class ScriptedReply(LogitsProcessor):
    """The reply so far (after the last <|assistant_start|>) decides the only allowed next token.

    `plan(reply)` returns the token to force. Forced tool outputs are part of the reply the plan sees, so a
    plan can copy them: a "model" that uses the calculator's answer.
    """

    def __init__(self, tokenizer, plan):
        self.start = special(tokenizer, "assistant_start")
        self.plan = plan
        self.calls = 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        ids = input_ids[0].tolist()
        reply = ids[len(ids) - ids[::-1].index(self.start) :]
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.plan(reply)] = 0.0
        return forced


def fixed_reply(tokenizer, tokens):
    end = special(tokenizer, "assistant_end")
    return lambda reply: tokens[len(reply)] if len(reply) < len(tokens) else end


def calculator_user(tokenizer, expression):
    """Writes `<|python_start|>expression<|python_end|>`, then `#### ` and copies the tool's output."""
    call = [*text_ids(tokenizer, "Let me compute. "), special(tokenizer, "python_start")]
    call += [*text_ids(tokenizer, expression), special(tokenizer, "python_end")]
    output_start, output_end = special(tokenizer, "output_start"), special(tokenizer, "output_end")

    def plan(reply):
        if output_end not in reply:
            return call[len(reply)]
        first, last = reply.index(output_start), reply.index(output_end)
        answer = [*text_ids(tokenizer, "\n#### "), *reply[first + 1 : last], special(tokenizer, "assistant_end")]
        return answer[min(len(reply) - last - 1, len(answer) - 1)]

    return plan


# ---------------------------------------------------------------------------------------------------------
# Categorical


def expected_categorical(model, tokenizer, task):
    """One prompt at a time, no padding: the answer letter with the largest logit at the last position."""
    outcomes = []
    for problem in task.problems:
        ids = render_for_completion(tokenizer, {"messages": problem.messages})
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        letter_ids = [text_ids(tokenizer, letter)[0] for letter in problem.letters]
        predicted = problem.letters[int(logits[letter_ids].argmax())]
        outcomes.append(int(predicted == problem.messages[-1]["content"]))
    return outcomes


@pytest.mark.parametrize("name, rows", [("ARC-Easy", ARC_ROWS), ("MMLU", MMLU_ROWS)])
def test_categorical_equals_the_direct_computation(model, tokenizer, tmp_path, name, rows):
    task = load_chat_task(name, str(write_jsonl(tmp_path / "rows.jsonl", rows)))
    expected = expected_categorical(model, tokenizer, task)
    for batch_size in (1, 4, 16):
        assert evaluate_categorical(model, tokenizer, task, batch_size, show_progress=False) == expected
    assert 0 < sum(expected) < len(expected)  # a random model: some right, some wrong


def test_rows_follow_nanochats_shuffle_and_max_problems(tmp_path):
    from datasets import Dataset

    path = write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
    task = load_chat_task("ARC-Challenge", str(path), max_problems=5)
    shuffled = Dataset.from_list(ARC_ROWS).shuffle(seed=42)
    assert [p.messages[0]["content"].split("\n")[0] for p in task.problems] == [
        f"Multiple Choice question: {row['question']}" for row in shuffled.select(range(5))
    ]
    first = task.problems[0]
    assert first.letters == ("A", "B", "C", "D")
    assert first.messages[0]["content"].endswith("\n\nRespond only with the letter of the correct answer.")
    assert "- item" in first.messages[0]["content"] and "=A\n" in first.messages[0]["content"]


# ---------------------------------------------------------------------------------------------------------
# Generative


def test_gsm8k_answers_with_the_calculator_tool(model, tokenizer, tmp_path):
    task = load_chat_task("GSM8K", str(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)))
    processor = ScriptedReply(tokenizer, calculator_user(tokenizer, "37*43"))
    outcomes = evaluate_generative(
        model,
        tokenizer,
        task,
        max_new_tokens=40,
        generate_kwargs={"logits_processor": LogitsProcessorList([processor])},
        show_progress=False,
    )
    # Only the tool computes 1591; the "model" copies it. The second problem's answer is 1592.
    assert outcomes == [int(p.reference == "1591") for p in task.problems]
    assert sorted(p.reference for p in task.problems) == ["1591", "1592"]


def test_humaneval_runs_programs_in_the_sandbox_only_when_enabled(model, tokenizer, tmp_path):
    task = load_chat_task("HumanEval", str(write_jsonl(tmp_path / "he.jsonl", HUMANEVAL_ROWS)))
    code = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    processor = ScriptedReply(tokenizer, fixed_reply(tokenizer, text_ids(tokenizer, code)))
    settings = dict(max_new_tokens=60, generate_kwargs={"logits_processor": LogitsProcessorList([processor])})
    with pytest.raises(CodeExecutionDisabled):
        evaluate_generative(model, tokenizer, task, sandbox=None, show_progress=False, **settings)
    with pytest.raises(CodeExecutionDisabled):
        evaluate_generative(model, tokenizer, task, sandbox=Sandbox(), show_progress=False, **settings)
    assert processor.calls == 0  # refused before generating anything
    outcomes = evaluate_generative(
        model, tokenizer, task, sandbox=Sandbox(enabled=True), show_progress=False, **settings
    )
    assert outcomes == [int("double" not in p.messages[0]["content"]) for p in task.problems]


def test_spelling_bee_problems_and_grading(model, tokenizer):
    task = load_chat_task("SpellingBee", max_problems=12)
    assert task.kind == "generative" and len(task.problems) == 12
    for problem in task.problems:
        text = "".join(part["text"] for part in problem.messages[-1]["content"] if part["type"] != "python")
        assert final_answer(text) == problem.reference and problem.reference.isdigit()
    assert load_chat_task("SpellingBee").problems[:12] == task.problems  # 256 fixed problems, a prefix kept
    outcomes = evaluate_generative(model, tokenizer, task, max_new_tokens=4, show_progress=False)
    assert len(outcomes) == 12 and set(outcomes) <= {0, 1}


def test_chatcore_metric_needs_every_task(model, tokenizer, tmp_path):
    arc = load_chat_task("ARC-Easy", str(write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)))
    result = evaluate_chat(model, tokenizer, [arc], batch_size=4, show_progress=False)
    accuracy = sum(result.outcomes["ARC-Easy"]) / len(ARC_ROWS)
    assert result.scores["accuracy"]["ARC-Easy"] == pytest.approx(accuracy)
    assert result.scores["centered"]["ARC-Easy"] == pytest.approx((accuracy - 0.25) / 0.75)
    assert result.scores["chatcore_metric"] is None and result.scores["chatcore_metric_5"] is None


# ---------------------------------------------------------------------------------------------------------
# Grading helpers


def test_answer_and_program_extraction():
    assert final_answer("so 12\n#### 1,234.5 dollars") == "1234.5"
    assert final_answer("#### -7") == "-7" and final_answer("no marker 42") is None
    assert leading_imports("import os\n# note\n\nfrom math import pi\ndef f():\n    import sys\n") == (
        "import os\nfrom math import pi"
    )
    assert completion_code("text\n```python\nx = 1\n```\nmore ```\ny\n```") == "x = 1"
    assert completion_code("```\nz = 2\n```") == "z = 2"
    assert completion_code("  plain = 3  ") == "plain = 3"
    problem = load_chat_task_rows_free()
    assert humaneval_program(problem, "def add(a, b):\n    return a + b") == (
        "import math\n\ndef add(a, b):\n    return a + b\n\n" + HUMANEVAL_ROWS[0]["test"] + "\ncheck(add)"
    )


def load_chat_task_rows_free():
    from nanochat_hf.eval.chat_tasks import humaneval_problem

    return humaneval_problem(HUMANEVAL_ROWS[0])


# ---------------------------------------------------------------------------------------------------------
# Errors, before any model work


def test_row_missing_a_field_is_named(tmp_path):
    rows = [dict(row) for row in GSM8K_ROWS]
    del rows[1]["answer"]
    with pytest.raises(UserInputError, match=r"GSM8K \(.*gsm8k\.jsonl\) row 1: missing field 'answer'"):
        load_chat_task("GSM8K", str(write_jsonl(tmp_path / "gsm8k.jsonl", rows)))
    bad = [dict(ARC_ROWS[0], answerKey="E")]
    with pytest.raises(UserInputError, match="row 0: answerKey 'E' is not one of the labels"):
        load_chat_task("ARC-Easy", str(write_jsonl(tmp_path / "arc.jsonl", bad)))


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(
        UserInputError, match=r"GSM8K: cannot load the Hub dataset openai/gsm8k/main .*--dataset gsm8k=FILE"
    ):
        load_chat_task("GSM8K")


def test_tokenizer_without_chat_template_is_refused(tmp_path):
    tokenizer = chat_tokenizer()
    tokenizer.chat_template = None
    arc = load_chat_task("ARC-Easy", str(write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)))
    with pytest.raises(UserInputError, match="has no chat template"):
        check_tokenizer_for_tasks(tokenizer, [arc])
    check_tokenizer_for_tasks(chat_tokenizer(), [arc])


def test_multi_token_answer_letters_are_refused(tmp_path):
    rows = [dict(ARC_ROWS[0], choices={"text": ["a", "b"], "label": ["first", "second"]}, answerKey="first")]
    task = load_chat_task("ARC-Easy", str(write_jsonl(tmp_path / "arc.jsonl", rows)))
    with pytest.raises(UserInputError, match="answer letter 'first' is .* tokens"):
        check_tokenizer_for_tasks(chat_tokenizer(), [task])
