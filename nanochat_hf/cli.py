"""The `nanochat-hf` command line.

Each subcommand lives in its own module under `nanochat_hf/commands/` and exposes
`register(subparsers)`, which adds its parser and sets `func` (a callable taking the parsed
namespace and returning an exit code). Modules are imported only to build the parser, and keep
their heavy imports (torch, transformers) inside `func`, so `nanochat-hf --help` stays fast.
"""

import argparse
import importlib
import sys

from nanochat_hf.errors import UserInputError


# Order here is the order in `nanochat-hf --help`.
COMMAND_MODULES = [
    "nanochat_hf.commands.convert",
    "nanochat_hf.commands.plan",
    "nanochat_hf.commands.plan_finetune",
    "nanochat_hf.commands.convert_tokenizer",
    "nanochat_hf.commands.chat",
    "nanochat_hf.commands.serve",
    "nanochat_hf.commands.merge_lora",
    "nanochat_hf.commands.eval",
    "nanochat_hf.commands.report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanochat-hf",
        description="Train, convert, plan and chat with nanochat models on the Hugging Face stack.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserInputError as err:
        print(f"nanochat-hf {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
