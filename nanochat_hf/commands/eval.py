"""`nanochat-hf eval MODEL --tasks core,bpb,arc-easy,...`: CORE, bits per byte and ChatCORE of a model.

Runs on several processes with `accelerate launch -m nanochat_hf.eval MODEL ...` (same arguments).
"""

import argparse
import json
import logging
import sys

from nanochat_hf.atomic import write_json_atomically
from nanochat_hf.errors import UserInputError


# Kept in step with nanochat_hf.eval.runner.TASK_CHOICES (not imported here: it would import torch).
TASKS_HELP = "core, bpb, arc-easy, arc-challenge, mmlu, gsm8k, humaneval, spellingbee, chatcore"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or Hub id (this package's format, or any causal LM for core/bpb)")
    parser.add_argument(
        "--tasks",
        default="core",
        help=f"comma-separated: {TASKS_HELP} (chatcore = all six chat tasks; default core)",
    )
    core = parser.add_argument_group("CORE")
    core.add_argument(
        "--eval-bundle",
        help="DCLM eval bundle: a folder with core.yaml, its zip (nanochat's eval_bundle.zip), a Hub dataset id, or "
        "'embedded' (a tiny bundle generated from Python's documentation)",
    )
    core.add_argument("--core-tasks", help="comma-separated labels: only these tasks of the bundle")
    core.add_argument("--max-per-task", type=int, default=-1, help="examples per task after the shuffle (-1: all)")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="examples (CORE), problems (ARC/MMLU) or rows (bpb) per forward pass"
    )
    bpb = parser.add_argument_group("bits per byte")
    bpb.add_argument("--bpb-data", default="embedded", help="Hub dataset id, local parquet/jsonl/txt, or 'embedded'")
    bpb.add_argument("--bpb-split", default="validation", choices=("validation", "train"))
    bpb.add_argument("--bpb-tokens", type=int, default=20 * 524_288, help="tokens to evaluate (nanochat: 10,485,760)")
    bpb.add_argument("--sequence-len", type=int, help="tokens per row (default: the model's context)")
    bpb.add_argument("--token-bytes-rule", default="g1", choices=("g1", "raw"), help="when no token_bytes.pt is saved")
    chat = parser.add_argument_group("ChatCORE")
    chat.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="TASK=SOURCE",
        help="rows of a chat task from a local .jsonl/.json/.parquet file or another Hub id (repeatable), "
        "e.g. gsm8k=gsm8k_test.jsonl",
    )
    chat.add_argument("--max-problems", type=int, help="problems per chat task (after nanochat's shuffle)")
    chat.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="run HumanEval's model-written programs in the sandbox (off by default)",
    )
    chat.add_argument("--max-new-tokens", type=int, default=512)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (nanochat's evaluation)")
    chat.add_argument("--top-k", type=int, default=50)
    chat.add_argument("--num-samples", type=int, default=1, help="a problem passes if any sample does")
    chat.add_argument("--spelling-words-file", help="word list for SpellingBee (e.g. dwyl's words_alpha.txt)")
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default="auto", help="auto (this process's GPU, else CPU), cpu, cuda:1, ...")
    run_group.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights")
    run_group.add_argument(
        "--autocast", default="auto", choices=("auto", "none", "bfloat16", "float16"), help="auto: bfloat16 on GPUs"
    )
    run_group.add_argument("--trust-remote-code", action="store_true", help="for models that need their own code")
    run_group.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    run_group.add_argument(
        "--output", help="also write the results as JSON to this file (e.g. MODEL/eval_results.json)"
    )
    run_group.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model: CORE (DCLM bundle), bits per byte, ChatCORE (ARC, MMLU, GSM8K, HumanEval, SpellingBee)",
        description=(
            "Evaluate a model the way nanochat does. Everything (bundle, datasets, tokenizer) is checked before the "
            "model is loaded. Several processes: accelerate launch -m nanochat_hf.eval MODEL ..."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def _datasets(pairs: list[str]) -> dict:
    found = {}
    for pair in pairs:
        key, sep, source = pair.partition("=")
        if not sep or not key.strip() or not source.strip():
            raise UserInputError(f"--dataset {pair!r}: expected TASK=SOURCE, e.g. gsm8k=gsm8k_test.jsonl")
        found[key.strip().lower()] = source.strip()
    return found


def request_from_args(args):
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.eval.runner import EvalRequest, parse_task_list

    return EvalRequest(
        model=args.model,
        tasks=parse_task_list(args.tasks),
        eval_bundle=args.eval_bundle,
        core_tasks=[t.strip() for t in args.core_tasks.split(",") if t.strip()] if args.core_tasks else None,
        max_per_task=args.max_per_task,
        batch_size=args.batch_size,
        bpb_data=args.bpb_data,
        bpb_split=args.bpb_split,
        bpb_tokens=args.bpb_tokens,
        sequence_len=args.sequence_len,
        token_bytes_rule=args.token_bytes_rule,
        datasets=_datasets(args.dataset),
        max_problems=args.max_problems,
        allow_code_execution=args.allow_code_execution,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        num_samples=args.num_samples,
        spelling_words_file=args.spelling_words_file,
        device=args.device,
        dtype=args.dtype,
        autocast=args.autocast,
        trust_remote_code=args.trust_remote_code,
        show_progress=not args.no_progress,
    )


def format_results(results: dict) -> str:
    lines = [f"Model: {results['model']}"]
    if "core" in results:
        core = results["core"]
        lines += ["", f"{'CORE task':<36} {'accuracy':>9} {'centered':>9}"]
        for label, accuracy in core["accuracy"].items():
            lines.append(f"{label:<36} {accuracy:>9.4f} {core['centered'][label]:>9.4f}")
        lines.append(f"{'CORE':<36} {'':>9} {core['core_metric']:>9.4f}")
    if "bpb" in results:
        bpb = results["bpb"]
        lines += ["", f"bits per byte: {bpb['bpb']:.6f} ({bpb['source']}, {bpb['split']}, {bpb['tokens']:,} tokens)"]
    if "chat" in results:
        chat = results["chat"]
        lines += ["", f"{'chat task':<36} {'accuracy':>9} {'centered':>9}"]
        for name, accuracy in chat["accuracy"].items():
            lines.append(f"{name:<36} {accuracy:>9.4f} {chat['centered'][name]:>9.4f}")
        for key, title in (("chatcore_metric", "ChatCORE (6 tasks)"), ("chatcore_metric_5", "ChatCORE (5 tasks)")):
            if chat.get(key) is not None:
                lines.append(f"{title:<36} {'':>9} {chat[key]:>9.4f}")
    return "\n".join(lines)


def run(args) -> int:
    # Imported when the command runs, so that `nanochat-hf --help` and the other commands start fast.
    from nanochat_hf.eval.distributed import is_main_process
    from nanochat_hf.eval.runner import run_evaluation  # (the same reason)

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    results = run_evaluation(request_from_args(args))
    if not is_main_process():
        return 0
    if args.output:
        write_json_atomically(args.output, results)
    if args.json:
        sys.stdout.write(json.dumps(results) + "\n")
    else:
        print(format_results(results))
    return 0
