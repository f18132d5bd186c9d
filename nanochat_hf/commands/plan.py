"""`nanochat-hf plan --depth 32 --gpu rtx4070`: memory, time, energy and cost of pretraining, before any run.

Flags that set something the pretraining recipe also sets carry the recipe's field name
(`--total-batch-size` is `total_batch_size`, `--target-tokens` is `target_tokens`, ...), with dashes or
underscores. The older spellings (`--tokens`, `--ratio`, `--price-kwh`, `--total-batch`) still work for
one release and warn.
"""

import argparse
import json
import sys
import warnings

from nanochat_hf.defaults import PARAM_DATA_RATIO, SEQUENCE_LEN, TOTAL_BATCH_SIZE, VOCAB_SIZE
from nanochat_hf.planning.choice import not_fit_message
from nanochat_hf.planning.horizon import GEN2_RATIO
from nanochat_hf.planning.memory_modes import MEMORY_MODE_CHOICES, parse_knob_assignment
from nanochat_hf.planning.plan import make_plan, plan_all_gpus
from nanochat_hf.planning.report import render_gpu_table, render_plan
from nanochat_hf.planning.time_energy import DEFAULT_CURRENCY, DEFAULT_MFU, DEFAULT_MFU_BAND, DEFAULT_PRICE_PER_KWH


def _mfu_band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH fractions such as 0.3,0.5, got {text!r}") from None
    return (min(low, high), max(low, high))


class _DeprecatedFlag(argparse.Action):
    """An old spelling kept for one release: it warns, then stores its value where the new flag does."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(
            f"nanochat-hf plan: {option_string} is deprecated and will be removed in the next release; "
            f"use {self.new_flag}",
            FutureWarning,
            stacklevel=2,
        )
        setattr(namespace, self.dest, values)


def _field_flag(group, name: str, old: str | None = None, **kwargs) -> None:
    """`--name-with-dashes` and `--name_with_underscores` for the recipe field `name`, plus a deprecated `old`."""
    group.add_argument(f"--{name.replace('_', '-')}", f"--{name}", dest=name, **kwargs)
    if old is not None:
        new_flag = f"--{name.replace('_', '-')}"
        group.add_argument(
            old,
            dest=name,
            action=_DeprecatedFlag,
            new_flag=new_flag,
            type=kwargs.get("type"),
            help=f"deprecated spelling of {new_flag}",
        )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan pretraining: parameters, FLOPs, memory per mode, time, energy and cost on a GPU",
        description=(
            "Compute, without a GPU, whether a nanochat model fits a GPU in each memory mode and what pretraining "
            "it costs: parameter counts, FLOPs per token and in total, GPU memory by component, CPU RAM, "
            "micro-batch and accumulation, days over an MFU band, kWh and electricity cost. Exits 1 when the "
            "requested memory mode does not fit (the output names the nearest mode that does)."
        ),
    )
    parser.add_argument("--depth", type=int, default=32, help="model depth (default 32: the released d32)")
    _field_flag(
        parser,
        "generation",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: nanochat's released architecture and recipe; 2: the 2026 one (ratio in scaling parameters, "
        "automatic batch; e.g. --generation 2 --depth 24 --target-param-data-ratio 8 is the GPT-2 speedrun)",
    )
    parser.add_argument("--gpu", help="GPU key or name from nanochat_hf/planning/gpus.csv (default: the detected GPU)")
    horizon = parser.add_mutually_exclusive_group()
    _field_flag(
        horizon,
        "target_tokens",
        "--tokens",
        type=float,
        help=f"training tokens, e.g. 38e9 (default: --target-param-data-ratio {PARAM_DATA_RATIO})",
    )
    _field_flag(
        horizon,
        "target_param_data_ratio",
        "--ratio",
        type=float,
        help=f"training tokens per parameter (generation 1: {PARAM_DATA_RATIO}) or per scaling parameter "
        f"(generation 2: {GEN2_RATIO:g})",
    )
    _field_flag(
        parser,
        "memory_mode",
        choices=MEMORY_MODE_CHOICES,
        default="auto",
        help="auto (least offloading mode that fits), full, 24gb, 12gb or 8gb",
    )
    parser.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one memory knob of the mode, e.g. activation_checkpointing=block or micro_batch=2",
    )
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"chosen MFU (default {DEFAULT_MFU})")
    parser.add_argument(
        "--mfu-band",
        "--mfu_band",
        type=_mfu_band,
        default=DEFAULT_MFU_BAND,
        help="LOW,HIGH MFU band (default 0.3,0.5)",
    )
    _field_flag(
        parser,
        "price_per_kwh",
        "--price-kwh",
        type=float,
        default=DEFAULT_PRICE_PER_KWH,
        help=f"electricity price per kWh (default {DEFAULT_PRICE_PER_KWH:.2f})",
    )
    parser.add_argument("--currency", default=DEFAULT_CURRENCY, help="currency of --price-per-kwh (default USD)")
    parser.add_argument(
        "--host-watts", "--host_watts", type=float, default=0.0, help="power of the rest of the machine (default 0)"
    )
    _field_flag(
        parser,
        "total_batch_size",
        "--total-batch",
        type=int,
        default=None,
        help=f"tokens per optimizer step (default: {TOTAL_BATCH_SIZE:,} for generation 1, automatic for 2)",
    )
    parser.add_argument(
        "--all-gpus", "--all_gpus", action="store_true", help="one line per GPU of the table instead of one plan"
    )
    _field_flag(
        parser, "sequence_len", type=int, default=SEQUENCE_LEN, help=f"tokens per row (default {SEQUENCE_LEN:,})"
    )
    parser.add_argument(
        "--vocab-size",
        "--vocab_size",
        type=int,
        default=None,
        help=f"vocabulary (default {VOCAB_SIZE:,} for generation 1, 32,768 for 2)",
    )
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    options = dict(
        target_tokens=args.target_tokens,
        target_param_data_ratio=args.target_param_data_ratio,
        memory_mode=args.memory_mode,
        knob_overrides=dict(parse_knob_assignment(text) for text in args.knob),
        mfu=args.mfu,
        mfu_band=args.mfu_band,
        price_per_kwh=args.price_per_kwh,
        currency=args.currency,
        host_power_w=args.host_watts,
        total_batch_size=args.total_batch_size,
        sequence_len=args.sequence_len,
        vocab_size=args.vocab_size,
        generation=args.generation,
    )
    if args.all_gpus:
        plans = plan_all_gpus(args.depth, **options)
        print(
            json.dumps([plan.to_dict() for plan in plans], indent=2) if args.json else render_gpu_table(plans), end=""
        )
        if args.json:
            print()
        return 0
    plan = make_plan(args.depth, args.gpu, **options)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render_plan(plan), end="\n" if args.json else "")
    if not plan.fits:
        print(f"nanochat-hf plan: {not_fit_message(plan)}", file=sys.stderr)
        return 1
    return 0
