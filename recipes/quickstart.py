"""The CPU quickstart end to end, in one command: pretrain, fine-tune into a chat model, ask it something.

    python recipes/quickstart.py
    python recipes/quickstart.py --prompt "How many r are in the word strawberry?"

1. Pretraining (recipes/configs/pretrain_cpu_quickstart.yaml): a tokenizer and a depth-4 nanochat on text
   that ships with Python -> runs/quickstart/final.
2. SFT (recipes/configs/sft_cpu_quickstart.yaml): the embedded synthetic chats (arithmetic with calculator
   calls, letter counting, spelling, identity) -> runs/quickstart-sft/final.
3. One question to the chat model, answered with the calculator tool when it decides to use it.
4. CORE of the base model on a small bundle generated from Python's documentation, and the run's report
   card (runs/quickstart/final/report.md with its plots).

No GPU, no download; several minutes on 2 CPU cores. A stage whose final folder exists is skipped (delete
the folder to redo it): final folders appear only once complete, so an existing one is a finished stage. The chat model then also works with `nanochat-hf chat runs/quickstart-sft/final`.
"""

import argparse
import logging
import sys
from pathlib import Path

from nanochat_hf.atomic import write_json_atomically
from nanochat_hf.chat.engine import ChatEngine, load_chat_model
from nanochat_hf.errors import run_reporting_errors
from nanochat_hf.eval.report import write_report
from nanochat_hf.eval.runner import EvalRequest, run_evaluation
from nanochat_hf.training import parse_pretrain_arguments, run_pretraining
from nanochat_hf.training.checkpoints import INCOMPLETE_PREFIX, final_problem, rename_aside
from nanochat_hf.training.sft import run_sft
from nanochat_hf.training.sft_arguments import parse_chat_arguments


CONFIGS = Path(__file__).resolve().parent / "configs"
PRETRAIN_CONFIG = CONFIGS / "pretrain_cpu_quickstart.yaml"
SFT_CONFIG = CONFIGS / "sft_cpu_quickstart.yaml"
def finished(final: Path) -> bool:
    """Whether a stage's final folder is there and complete; an incomplete one is renamed aside."""
    if not final.exists():
        return False
    problem = final_problem(final)
    if problem is None:
        return True
    moved = rename_aside(final, INCOMPLETE_PREFIX)
    print(f"{final} is incomplete ({problem}): moved it to {moved} and redoing the stage")
    return False


DEFAULT_PROMPT = "Sam has 12 apples. Sam buys 3 packs with 5 apples in each pack. How many apples does Sam have now?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="CPU quickstart: pretrain, SFT, then a one-shot chat answer.")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--output-root", default=None, help="put both runs under this folder (default: the configs')")
    options = parser.parse_args(argv)
    pretrain_overrides, sft_overrides = [], []
    if options.output_root is not None:
        pretrain_overrides = ["--output_dir", str(Path(options.output_root) / "quickstart")]
        sft_overrides = ["--output_dir", str(Path(options.output_root) / "quickstart-sft")]
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return run_reporting_errors(lambda: quickstart(options, pretrain_overrides, sft_overrides), "quickstart")


def quickstart(options, pretrain_overrides, sft_overrides) -> int:
    args, training_args = parse_pretrain_arguments(["--config", str(PRETRAIN_CONFIG), *pretrain_overrides])
    base = Path(training_args.output_dir) / "final"
    if finished(base):
        print(f"[1/4] {base} exists: skipping pretraining")
    else:
        print("[1/4] pretraining the base model")
        base = run_pretraining(args, training_args)

    args, training_args, model_args = parse_chat_arguments(
        ["--config", str(SFT_CONFIG), "--model_name_or_path", str(base), *sft_overrides]
    )
    chat_model = Path(training_args.output_dir) / "final"
    if finished(chat_model):
        print(f"[2/4] {chat_model} exists: skipping SFT")
    else:
        print("[2/4] fine-tuning it into a chat model")
        chat_model = run_sft(args, training_args, model_args)

    model, tokenizer = load_chat_model(str(chat_model), device="cpu")
    print(f"[3/4] asking {chat_model}\n\nUser: {options.prompt}\nAssistant: ", end="", flush=True)

    def show(event):
        text = "<<" if event.kind == "python" and not event.text else event.text
        print(f"={text}>>" if event.kind == "python_output" else text, end="", flush=True)

    ChatEngine(model, tokenizer).generate(
        [{"role": "user", "content": options.prompt}], temperature=0, on_event=show
    )
    print(f"\n\nKeep chatting: nanochat-hf chat {chat_model}")

    print("[4/4] CORE of the base model on a small bundle made from Python's documentation")
    request = EvalRequest(model=str(base), tasks=["core"], eval_bundle="embedded", max_per_task=32, device="cpu")
    results = run_evaluation(request)
    write_json_atomically(Path(base) / "eval_core.json", results)
    report = write_report(base)
    core = results["core"]
    print(f"Report card: {report}")
    print(f"CORE (embedded bundle, {len(core['accuracy'])} tasks): {core['core_metric']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
