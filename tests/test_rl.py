"""RL with trl's GRPOTrainer on tiny models (CPU, float32): learning, masks, tool errors, resume, refusals.

The models are real tiny NanoChatHFForCausalLM fine-tuned in the test (rl_helpers.toy_sft_model); rollouts run
through the real chat engine and calculator. Where a test needs the model to write a tool call, its
`generate()` is driven by a logits processor that leaves only the scripted token possible at each step.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from chat_helpers import Capture, chat_tokenizer
from rl_helpers import QUESTIONS, REWARDED_DIGIT, rl_args, toy_sft_model
from safetensors.torch import load_file
from transformers import LogitsProcessor, LogitsProcessorList, TrainerCallback

from nanochat_hf.chat.engine import ChatEngine, load_chat_model
from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.chat_tasks import final_answer
from nanochat_hf.optim import NanoChatMuonAdamW
from nanochat_hf.training.rl import build_rl_trainer, run_rl


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

REPO = Path(__file__).resolve().parents[1]


class CyclicScript(LogitsProcessor):
    """Forces the sampled tokens to follow `script`, starting over after its last token (one rollout each)."""

    def __init__(self, script):
        self.script, self.step = list(script), 0

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.script[self.step % len(self.script)]] = 0.0
        self.step += 1
        return forced


class Logs(TrainerCallback):
    def __init__(self):
        self.train, self.eval = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.train.append(dict(logs, step=state.global_step))
        if logs and "eval_reward" in logs:
            self.eval.append(dict(logs, step=state.global_step))


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("killed")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return toy_sft_model(tmp_path_factory.mktemp("rl"))


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def special(tokenizer, name):
    return tokenizer.convert_tokens_to_ids(f"<|{name}|>")


def test_mean_reward_rises_and_the_result_is_a_chat_model(tmp_path, toy):
    model, dataset = toy
    logs = Logs()
    final = run_rl(
        *rl_args(
            tmp_path / "run",
            model,
            dataset,
            max_steps=30,
            init_lr_frac=1.0,
            eval_strategy="steps",
            eval_steps=15,
            eval_dataset=str(dataset),
            eval_size=4,
            per_device_eval_batch_size=8,
        ),
        extra_callbacks=[logs],
    )
    rewards = [entry["reward"] for entry in logs.train]
    assert len(rewards) == 30
    # The SFT'd toy model starts poor and learns within a few updates: the first two steps' rollouts come from
    # the policy before (and after one) update, the last five's from the trained one.
    first, last = sum(rewards[:2]) / 2, sum(rewards[-5:]) / 5
    assert first < 0.3 and last > first + 0.4, rewards
    # pass@k over each question's 8 samples, logged next to the reward; pass@1 is the mean exact reward.
    assert all(abs(entry["pass@1"] - entry["rewards/exact_answer_reward/mean"]) < 1e-6 for entry in logs.train)
    assert all(entry["pass@8"] >= entry["pass@4"] >= entry["pass@1"] for entry in logs.train)
    assert all(entry["completions/mean_length"] > 0 for entry in logs.train)
    # Held-out pass@1 every eval_steps.
    assert [entry["step"] for entry in logs.eval] == [15, 30] and "eval_pass@1" in logs.eval[-1]

    # The final folder is a normal chat model: it loads and answers in the chat engine.
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["stage"] == "rl" and settings["sampling"]["num_generations"] == 8
    assert "(RL)" in (final / "README.md").read_text()
    chat_model, tokenizer = load_chat_model(str(final), device="cpu")
    # Within the rollouts' 16 tokens. Whether the reply then stops is not asserted: as in nanochat, a rollout
    # cut at the length limit is still rewarded, so 30 steps at the full LR may trade the end token for
    # repeats of the answer (it did on one CPU and not on another).
    question = [{"role": "user", "content": QUESTIONS[0]}]
    reply = ChatEngine(chat_model, tokenizer).generate(question, temperature=0, max_new_tokens=16)
    assert final_answer(reply.text) == REWARDED_DIGIT, reply.text


def test_rl_learning_rates_and_schedule_are_nanochats(tmp_path, toy, monkeypatch, capsys):
    model, dataset = toy
    capture = Capture()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_rl(*rl_args(tmp_path / "run", model, dataset, max_steps=4), extra_callbacks=[capture])
    assert "CPU threads: 1 (OMP_NUM_THREADS)" in capsys.readouterr().out  # chosen like every CPU stage
    scale = (64 / 768) ** -0.5  # AdamW LRs scale with the model width (d = 64)
    expected = {"muon": 0.02 * 0.05, "embedding": 0.2 * 0.05 * scale, "unembedding": 0.004 * 0.05 * scale}
    optimizer = getattr(capture.first_step["optimizer"], "optimizer", capture.first_step["optimizer"])
    assert isinstance(optimizer, NanoChatMuonAdamW)
    for group, lr in zip(optimizer.param_groups, capture.first_step["lrs"], strict=True):
        key = "muon" if group["kind"] == "muon" else group["name"]
        assert lr == pytest.approx(expected[key])
        if group["kind"] == "muon":
            assert group["momentum_warmup_steps"] == 0 and group["momentum_end"] == 0.95
    lambdas = capture.first_step["scheduler"].lr_lambdas[0]
    assert [lambdas(step) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]  # 1 - step/steps


def test_forced_tool_output_has_zero_loss_weight_token_by_token(tmp_path, toy):
    model, dataset = toy
    tokenizer = chat_tokenizer()
    s = lambda name: special(tokenizer, name)  # noqa: E731
    call, after = [s("python_start"), *ids(tokenizer, "3+4"), s("python_end")], ids(tokenizer, " #### 7")
    script = [*call, *after, s("assistant_end")]
    trainer = build_rl_trainer(
        *rl_args(tmp_path / "run", model, dataset),
        generate_kwargs={"logits_processor": LogitsProcessorList([CyclicScript(script)])},
    )
    forced = [s("output_start"), *ids(tokenizer, "7"), s("output_end")]
    rollout = trainer.rollout_func([[{"role": "user", "content": QUESTIONS[0]}]] * 2, trainer)
    expected_ids = [*call, *forced, *after, s("assistant_end")]
    expected_mask = [1] * len(call) + [0] * len(forced) + [1] * len(after) + [0]  # the terminal token: 0 too
    assert rollout["completion_ids"] == [expected_ids] * 2
    assert rollout["env_mask"] == [expected_mask] * 2

    # Through the trainer: the loss weight of every completion token is completion_mask x tool_mask.
    rows = [trainer.train_dataset[i] for i in range(16)]
    batch = trainer._generate_and_score_completions(rows)
    weights = (batch["completion_mask"] * batch["tool_mask"]).tolist()
    assert batch["completion_ids"].tolist() == [expected_ids] * 16
    assert weights == [expected_mask] * 16
    # The answer after the tool call is right: every sample earns the reward.
    assert all(reply.text == "<<3+4=7>> #### 7" for reply in trainer.rollout_func.last_replies)


def test_malformed_tool_call_gets_the_error_as_output_and_training_goes_on(tmp_path, toy):
    model, dataset = toy
    tokenizer = chat_tokenizer()
    s = lambda name: special(tokenizer, name)  # noqa: E731
    script = [
        s("python_start"),
        *ids(tokenizer, "3+*"),
        s("python_end"),
        *ids(tokenizer, " #### 7"),
        s("assistant_end"),
    ]
    trainer = build_rl_trainer(
        *rl_args(tmp_path / "run", model, dataset, max_steps=2),
        generate_kwargs={"logits_processor": LogitsProcessorList([CyclicScript(script)])},
    )
    trainer.train()
    assert trainer.state.global_step == 2
    output = trainer.rollout_func.last_replies[0].parts[1]
    assert output["type"] == "python_output" and output["text"].startswith("Error")


def test_kill_and_resume_continues_from_the_last_checkpoint(tmp_path, toy):
    model, dataset = toy
    settings = dict(max_steps=6, save_strategy="steps", save_steps=2, init_lr_frac=1.0)
    reference = run_rl(*rl_args(tmp_path / "uninterrupted", model, dataset, **settings))

    with pytest.raises(KeyboardInterrupt):
        run_rl(*rl_args(tmp_path / "run", model, dataset, **settings), extra_callbacks=[KillAt(5)])
    assert not (tmp_path / "run" / "final").exists()
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    logs = Logs()
    final = run_rl(
        *rl_args(tmp_path / "run", model, dataset, resume_from_checkpoint="last", **settings), extra_callbacks=[logs]
    )
    assert [entry["step"] for entry in logs.train] == [5, 6]  # continued after step 4, did not start over

    state = json.loads((final / "trainer_state.json").read_text())
    reference_state = json.loads((reference / "trainer_state.json").read_text())
    rewards = lambda s: [entry["reward"] for entry in s["log_history"] if "reward" in entry]  # noqa: E731
    assert rewards(state) == rewards(reference_state)  # the same seeded rollouts
    weights, reference_weights = load_file(final / "model.safetensors"), load_file(reference / "model.safetensors")
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(weights[name], tensor, msg=name)


# ---------------------------------------------------------------------------------------------------------
# Refused before any rollout


def test_reward_function_of_the_wrong_length_is_refused_before_any_rollout(tmp_path, toy):
    model, dataset = toy

    def one_reward(completions, **kwargs):
        return [1.0]

    with pytest.raises(UserInputError, match="reward function 'one_reward' returned 1 rewards for 12 completions"):
        run_rl(*rl_args(tmp_path / "run", model, dataset), reward_funcs=[one_reward])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_generations": 3, "examples_per_step": 0}, "must be divisible by num_generations"),
        ({"examples_per_step": 3, "per_device_train_batch_size": 16}, "--examples_per_step 3 x --num_generations 8"),
    ],
)
def test_num_generations_that_does_not_divide_the_batch_is_refused(tmp_path, toy, overrides, message):
    model, dataset = toy
    with pytest.raises(UserInputError, match=message):
        run_rl(*rl_args(tmp_path / "run", model, dataset, **overrides))
    assert not (tmp_path / "run").exists()


def test_prompt_longer_than_the_context_is_refused(tmp_path, toy):
    model, _ = toy
    long = tmp_path / "long.jsonl"
    long.write_text(
        json.dumps({"question": "ok", "answer": "1"})
        + "\n"
        + json.dumps({"question": "word " * 400, "answer": "1"})
        + "\n"
    )
    with pytest.raises(UserInputError, match="--dataset row 1: the prompt is .* tokens, the model's context is 256"):
        run_rl(*rl_args(tmp_path / "run", model, long))
    assert not (tmp_path / "run").exists()


def test_model_without_chat_template_or_tool_tokens_is_refused(tmp_path, toy):
    model, dataset = toy
    tokenizer = chat_tokenizer()
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "no-template")
    (tmp_path / "no-template" / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserInputError, match="has no chat template"):
        run_rl(*rl_args(tmp_path / "run", model, dataset, tokenizer_name_or_path=tmp_path / "no-template"))

    chat_tokenizer().save_pretrained(tmp_path / "no-tools")
    for path in (tmp_path / "no-tools").iterdir():
        path.write_text(path.read_text().replace("<|python_start|>", "<|py_begin|>"))
    with pytest.raises(UserInputError, match="no '<\\|python_start\\|>' token"):
        run_rl(*rl_args(tmp_path / "run", model, dataset, tokenizer_name_or_path=tmp_path / "no-tools"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------
# The recipes


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rl_recipe_runs_the_cpu_config_and_reports_bad_input(tmp_path, toy, capsys):
    model, _ = toy
    recipe = load_recipe("rl")
    config = str(REPO / "recipes" / "configs" / "rl_cpu_quickstart.yaml")
    overrides = [
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(tmp_path / "run"),
        "--max_steps",
        "1",
        "--examples_per_step",
        "1",
        "--synthetic_size",
        "8",
        "--eval_size",
        "1",
        "--eval_steps",
        "1",
        "--max_completion_length",
        "24",
        "--disable_tqdm",
        "true",
    ]
    assert recipe.main(overrides, default_config=config) == 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert recipe.main([*overrides, "--output_dir", str(tmp_path / "bad"), "--dataset", "nowhere.jsonl"], config) == 2
    assert "--dataset nowhere.jsonl: no such file" in capsys.readouterr().err


def test_quickstart_rl_stage_prints_the_reward(tmp_path, toy, capsys):
    model, _ = toy
    quickstart = load_recipe("quickstart")
    overrides = [
        "--output_dir",
        str(tmp_path / "quickstart-rl"),
        "--max_steps",
        "2",
        "--examples_per_step",
        "1",
        "--synthetic_size",
        "8",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--max_completion_length",
        "24",
    ]
    final = quickstart.run_rl_stage(model, overrides)
    assert final == tmp_path / "quickstart-rl" / "final" and final.is_dir()
    out = capsys.readouterr().out
    assert "step   1  mean reward" in out and "step   2  mean reward" in out and "[RL] mean reward, first half" in out
    assert quickstart.run_rl_stage(model, overrides) == final  # a finished stage is skipped
    assert "exists: skipping RL" in capsys.readouterr().out


def test_lora_rl_writes_an_adapter_with_the_trainers_optimizer(tmp_path, toy):
    model, dataset = toy
    final = run_rl(
        *rl_args(
            tmp_path / "run",
            model,
            dataset,
            max_steps=2,
            use_peft=True,
            lora_r=4,
            lora_alpha=8,
            optim="adamw_torch",
            learning_rate=1e-3,
            activation_checkpointing=True,
        )
    )
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    settings = json.loads((final / "run_settings.json").read_text())
    assert settings["method"] == "lora" and settings["optimizer"]["name"] == "trainer"
    assert settings["optimizer"]["optim"] == "adamw_torch"  # the option's name, not OptimizerNames' repr
    chat_model, tokenizer = load_chat_model(str(final), device="cpu")  # the adapter on its recorded base
    assert (
        ChatEngine(chat_model, tokenizer).generate([{"role": "user", "content": QUESTIONS[1]}], temperature=0).finished
    )
