"""`nanochat-hf eval` and `accelerate launch -m nanochat_hf.eval`: JSON results, the same for every batch
size and for 1 or 2 processes, and every input error reported (exit status 2) before the model is loaded."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chat_helpers import save_tiny_model
from eval_helpers import core_examples, save_base_model, write_bundle
from test_eval_chat import ARC_ROWS, write_jsonl

from nanochat_hf.cli import main as cli_main


REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_dir):
    return save_base_model(tmp_path_factory.mktemp("cli") / "model", tokenizer_dir)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return write_bundle(tmp_path_factory.mktemp("bundle"), core_examples(seed=11, count=20))


def eval_json(capsys, *argv) -> dict:
    assert cli_main(["eval", *map(str, argv), "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_has_per_task_accuracy_centered_and_core(capsys, model_dir, bundle_dir):
    results = eval_json(capsys, model_dir, "--tasks", "core,bpb", "--eval-bundle", bundle_dir, "--bpb-tokens", 256)
    core = results["core"]
    assert set(core["accuracy"]) == set(core["centered"]) == {"toy_mc", "toy_schema", "toy_lm"}
    for label, baseline in (("toy_mc", 0.25), ("toy_schema", 0.5), ("toy_lm", 0.0)):
        assert core["centered"][label] == pytest.approx((core["accuracy"][label] - baseline) / (1 - baseline))
    assert core["core_metric"] == pytest.approx(sum(core["centered"].values()) / 3)
    assert core["tasks"]["toy_mc"] == {"type": "multiple_choice", "shots": 2, "examples": 20, "random_baseline": 25.0}
    assert results["bpb"]["bpb"] > 0 and results["bpb"]["tokens"] >= 256


def test_batch_size_does_not_change_the_results(capsys, model_dir, bundle_dir):
    one = eval_json(capsys, model_dir, "--eval-bundle", bundle_dir, "--batch-size", 1, "--max-per-task", 12)
    many = eval_json(capsys, model_dir, "--eval-bundle", bundle_dir, "--batch-size", 7, "--max-per-task", 12)
    assert one["core"] == many["core"]


def test_two_processes_give_the_same_results_as_one(capsys, model_dir, bundle_dir, tmp_path):
    arc = write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
    arguments = [str(model_dir), "--tasks", "core,bpb,arc-easy,spellingbee", "--eval-bundle", str(bundle_dir)]
    arguments += [
        "--bpb-tokens",
        "512",
        "--dataset",
        f"arc-easy={arc}",
        "--max-problems",
        "7",
        "--max-new-tokens",
        "6",
    ]
    arguments += ["--batch-size", "3", "--json", "--no-progress"]
    single = eval_json(capsys, *arguments[:-2])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launch += [str(REPO / "accelerate_configs" / "cpu_2proc.yaml"), "-m", "nanochat_hf.eval", *arguments]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout  # only the main process prints
    double = json.loads(lines[0])
    assert double["core"] == single["core"]
    assert double["bpb"]["bpb"] == pytest.approx(single["bpb"]["bpb"], rel=1e-6)
    assert double["chat"] == single["chat"] and double["chat"]["problems"] == {"ARC-Easy": 7, "SpellingBee": 7}


def test_chat_tasks_from_local_files(capsys, tmp_path):
    model = save_tiny_model(tmp_path / "chat", random_weights=True)
    data = write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
    results = eval_json(
        capsys,
        model,
        "--tasks",
        "arc-easy,arc-challenge",
        "--dataset",
        f"arc-easy={data}",
        "--dataset",
        f"arc-challenge={data}",
        "--max-problems",
        8,
    )
    chat = results["chat"]
    assert chat["problems"] == {"ARC-Easy": 8, "ARC-Challenge": 8}
    assert chat["accuracy"]["ARC-Easy"] == chat["accuracy"]["ARC-Challenge"]  # same rows, same answers
    assert chat["chatcore_metric"] is None


# ---------------------------------------------------------------------------------------------------------
# Errors: reported with exit status 2 before the model is loaded (MODEL here does not even exist)


def error_of(capsys, *argv) -> str:
    assert cli_main(["eval", *map(str, argv)]) == 2
    return capsys.readouterr().err


def test_bundle_without_core_yaml(capsys, tmp_path, bundle_dir):
    broken = shutil.copytree(bundle_dir, tmp_path / "bundle")
    (broken / "core.yaml").unlink()
    assert "no core.yaml in this folder" in error_of(capsys, tmp_path / "no-model", "--eval-bundle", broken)


def test_unknown_task_type_and_missing_field(capsys, tmp_path, bundle_dir):
    broken = shutil.copytree(bundle_dir, tmp_path / "bundle")
    text = (broken / "core.yaml").read_text()
    (broken / "core.yaml").write_text(text.replace("language_modeling", "translation"))
    assert "task 'toy_lm': unknown icl_task_type 'translation'" in error_of(
        capsys, tmp_path / "no-model", "--eval-bundle", broken
    )
    (broken / "core.yaml").write_text(text)
    (broken / "eval_data" / "toy" / "schema.jsonl").write_text('{"context_options": ["a", "b"], "gold": 0}\n')
    assert "schema.jsonl line 1: missing field 'continuation'" in error_of(
        capsys, tmp_path / "no-model", "--eval-bundle", broken
    )


def test_unknown_task_and_missing_bundle(capsys, tmp_path):
    assert "unknown task 'hellaswag'" in error_of(capsys, tmp_path, "--tasks", "core,hellaswag")
    assert "--tasks core needs --eval-bundle" in error_of(capsys, tmp_path, "--tasks", "core")


def test_hub_dataset_offline(capsys, tmp_path):
    err = error_of(capsys, tmp_path / "no-model", "--tasks", "gsm8k")
    assert "cannot load the Hub dataset openai/gsm8k" in err and "--dataset gsm8k=FILE" in err


def test_humaneval_needs_the_opt_in(capsys, tmp_path):
    data = write_jsonl(
        tmp_path / "he.jsonl",
        [{"prompt": "def f():\n", "canonical_solution": "  pass\n", "test": "", "entry_point": "f"}],
    )
    err = error_of(capsys, tmp_path / "no-model", "--tasks", "humaneval", "--dataset", f"humaneval={data}")
    assert "--allow-code-execution" in err


def test_tokenizer_without_chat_template_before_the_weights(capsys, tmp_path):
    model = save_tiny_model(tmp_path / "chat", random_weights=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    (model / "model.safetensors").unlink()  # had the model been loaded first, this would be the error
    data = write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
    err = error_of(capsys, model, "--tasks", "arc-easy", "--dataset", f"arc-easy={data}")
    assert "has no chat template" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = capsys.readouterr().out
    assert "eval" in out and "report" in out
