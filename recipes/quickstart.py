"""The CPU quickstart end to end, in one command: pretrain, fine-tune into a chat model, ask it something.

    python recipes/quickstart.py
    python recipes/quickstart.py --prompt "How many r are in the word strawberry?"
    python recipes/quickstart.py --rl     # adds RL on the embedded arithmetic problems after SFT

1. Pretraining (recipes/configs/pretrain_cpu_quickstart.yaml): a tokenizer and a depth-4 nanochat on text
   that ships with Python -> runs/quickstart/final.
2. SFT (recipes/configs/sft_cpu_quickstart.yaml): the embedded synthetic chats (arithmetic with calculator
   calls, letter counting, spelling, identity) -> runs/quickstart-sft/final.
   Optional (--rl): RL (recipes/configs/rl_cpu_quickstart.yaml) of the chat model on the embedded arithmetic
   word problems with trl's GRPOTrainer, the calculator in the loop; prints the mean reward as it rises
   -> runs/quickstart-rl/final, which then answers the question.
3. One question to the chat model, answered with the calculator tool when it decides to use it.
4. CORE of the base model on a small bundle generated from Python's documentation, and the run's report
   card (runs/quickstart/final/report.md with its plots).

No GPU, no download. The expected time printed at the start is what `benchmarks/quickstart_time.py`
measured (see the README); torch uses the cores that are idle when a stage starts (`nanochat_hf.cpu_threads`).
A stage whose final folder exists is skipped (delete the folder to redo it): final folders appear only
once complete, so an existing one is a finished stage. The chat model then also works with
`nanochat-hf chat runs/quickstart-sft/final`.
"""

import argparse
import logging
import sys
from pathlib import Path

from transformers import TrainerCallback

from nanochat_hf.atomic import write_json_atomically
from nanochat_hf.chat.engine import ChatEngine, load_chat_model
from nanochat_hf.errors import UserInputError
from nanochat_hf.eval.report import write_report
from nanochat_hf.eval.runner import EvalRequest, run_evaluation
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.rl import run_rl
from nanochat_hf.training.rl_arguments import parse_rl_arguments
from nanochat_hf.training.sft import run_sft
from nanochat_hf.training.sft_arguments import parse_chat_arguments


CONFIGS = Path(__file__).resolve().parent / "configs"
PRETRAIN_CONFIG = CONFIGS / "pretrain_cpu_quickstart.yaml"
SFT_CONFIG = CONFIGS / "sft_cpu_quickstart.yaml"
RL_CONFIG = CONFIGS / "rl_cpu_quickstart.yaml"
DEFAULT_PROMPT = "Sam has 12 apples. Sam buys 3 packs with 5 apples in each pack. How many apples does Sam have now?"
CORE_EXAMPLES_PER_TASK = 32
# CPU seconds of each stage with 1 torch thread, measured by `benchmarks/quickstart_time.py --threads 1` on the
# 2-core CPU sandbox (README); with 1 thread on an idle core, wall time is about the CPU time.
MEASURED_CPU_SECONDS = {"tokenizer": 2, "pretraining": 310, "SFT": 115, "answer": 1, "CORE and report": 3}


def expected_duration() -> str:
    minutes = sum(MEASURED_CPU_SECONDS.values()) / 60
    return (
        f"expected: about {minutes:.0f} minutes on 2 idle CPU cores ({sum(MEASURED_CPU_SECONDS.values())} CPU seconds "
        "measured by benchmarks/quickstart_time.py), longer while other programs keep the cores busy"
    )


def pretrain_stage(overrides=()) -> Path:
    args, training_args = parse_pretrain_arguments(["--config", str(PRETRAIN_CONFIG), *overrides])
    base = Path(training_args.output_dir) / "final"
    if base.exists():
        print(f"[1/4] {base} exists: skipping pretraining")
        return base
    print("[1/4] pretraining the base model")
    return run_pretraining(args, training_args)


def sft_stage(base: Path, overrides=()) -> Path:
    args, training_args, model_args = parse_chat_arguments(
        ["--config", str(SFT_CONFIG), "--model_name_or_path", str(base), *overrides]
    )
    chat_model = Path(training_args.output_dir) / "final"
    if chat_model.exists():
        print(f"[2/4] {chat_model} exists: skipping SFT")
        return chat_model
    print("[2/4] fine-tuning it into a chat model")
    return run_sft(args, training_args, model_args)


def answer_stage(chat_model: Path, prompt: str) -> str:
    model, tokenizer = load_chat_model(str(chat_model), device="cpu")
    print(f"[3/4] asking {chat_model}\n\nUser: {prompt}\nAssistant: ", end="", flush=True)

    def show(event):
        text = "<<" if event.kind == "python" and not event.text else event.text
        print(f"={text}>>" if event.kind == "python_output" else text, end="", flush=True)

    reply = ChatEngine(model, tokenizer).generate([{"role": "user", "content": prompt}], temperature=0, on_event=show)
    print(f"\n\nKeep chatting: nanochat-hf chat {chat_model}")
    return reply.text


def core_stage(base: Path) -> dict:
    print("[4/4] CORE of the base model on a small bundle made from Python's documentation")
    request = EvalRequest(
        model=str(base), tasks=["core"], eval_bundle="embedded", max_per_task=CORE_EXAMPLES_PER_TASK, device="cpu"
    )
    results = run_evaluation(request)
    write_json_atomically(Path(base) / "eval_core.json", results)
    report = write_report(base)
    core = results["core"]
    print(f"Report card: {report}")
    print(f"CORE (embedded bundle, {len(core['accuracy'])} tasks): {core['core_metric']:.4f}")
    return results


def stage_overrides(output_root) -> tuple[list[str], list[str], list[str]]:
    """--output_dir of the pretraining, SFT and RL stages under `output_root` (none: the configs' own)."""
    if output_root is None:
        return [], [], []
    return tuple(
        ["--output_dir", str(Path(output_root) / name)] for name in ("quickstart", "quickstart-sft", "quickstart-rl")
    )


class _RewardPrinter(TrainerCallback):
    """Prints the mean reward (and held-out pass@1) as the RL stage logs them."""

    def __init__(self):
        self.rewards = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self.rewards.append(logs["reward"])
            print(
                f"    step {state.global_step:3d}  mean reward {logs['reward']:.3f}  (exact answers: pass@1 "
                f"{logs.get('pass@1', 0):.3f}, ending with '#### <number>': "
                f"{logs.get('rewards/format_reward/mean', 0):.3f})"
            )
        if logs and "eval_pass@1" in logs:
            print(f"    step {state.global_step:3d}  held-out pass@1 {logs['eval_pass@1']:.3f}")


def run_rl_stage(chat_model: Path, overrides: list[str]) -> Path:
    args, training_args, model_args = parse_rl_arguments(
        ["--config", str(RL_CONFIG), "--model_name_or_path", str(chat_model), "--disable_tqdm", "true", *overrides]
    )
    final = Path(training_args.output_dir) / "final"
    if final.exists():
        print(f"[RL] {final} exists: skipping RL")
        return final
    print("[RL] reinforcement learning on the embedded arithmetic problems (calculator in the loop)")
    printer = _RewardPrinter()
    final = run_rl(args, training_args, model_args, extra_callbacks=[printer])
    if printer.rewards:
        head, tail = printer.rewards[: len(printer.rewards) // 2], printer.rewards[len(printer.rewards) // 2 :]
        print(
            f"[RL] mean reward, first half of the logs {sum(head) / max(len(head), 1):.3f} -> second half "
            f"{sum(tail) / max(len(tail), 1):.3f}"
        )
    return final


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="CPU quickstart: pretrain, SFT, then a one-shot chat answer.")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--output-root", default=None, help="put the runs under this folder (default: the configs')")
    parser.add_argument("--rl", action="store_true", help="add the RL stage (GRPO on the embedded arithmetic set)")
    options = parser.parse_args(argv)
    pretrain_overrides, sft_overrides, rl_overrides = stage_overrides(options.output_root)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    print(f"CPU quickstart: 4 stages; {expected_duration()}.", flush=True)
    try:
        base = pretrain_stage(pretrain_overrides)
        chat_model = sft_stage(base, sft_overrides)
        if options.rl:
            chat_model = run_rl_stage(chat_model, rl_overrides)
        answer_stage(chat_model, options.prompt)
        core_stage(base)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
