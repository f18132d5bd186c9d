"""`nanochat-hf plan --depth 32 --gpu rtx4070`: memory, time, energy and cost of pretraining, before any run."""


def _mfu_band(text: str) -> tuple[float, float]:
    import argparse

    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH fractions such as 0.3,0.5, got {text!r}") from None
    return (min(low, high), max(low, high))


def register(subparsers) -> None:
    from nanochat_hf.memory_modes import MEMORY_MODE_CHOICES

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
    parser.add_argument("--gpu", help="GPU key or name from nanochat_hf/data/gpus.csv (default: the detected GPU)")
    horizon = parser.add_mutually_exclusive_group()
    horizon.add_argument("--tokens", type=float, help="training tokens, e.g. 38e9 (default: --ratio 20)")
    horizon.add_argument("--ratio", type=float, help="training tokens per parameter (nanochat: 20)")
    parser.add_argument(
        "--memory-mode",
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
    parser.add_argument("--mfu", type=float, default=0.4, help="chosen model FLOPs utilisation (default 0.4)")
    parser.add_argument("--mfu-band", type=_mfu_band, default=(0.3, 0.5), help="LOW,HIGH MFU band (default 0.3,0.5)")
    parser.add_argument("--price-kwh", type=float, default=0.30, help="electricity price per kWh (default 0.30)")
    parser.add_argument("--currency", default="USD", help="currency of --price-kwh (default USD)")
    parser.add_argument("--host-watts", type=float, default=0.0, help="power of the rest of the machine (default 0)")
    parser.add_argument("--total-batch", type=int, default=524288, help="tokens per optimizer step (default 524,288)")
    parser.add_argument("--all-gpus", action="store_true", help="one line per GPU of the table instead of one plan")
    parser.add_argument("--json", action="store_true", help="print every number as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from nanochat_hf.memory_modes import parse_knob_assignment
    from nanochat_hf.planner import make_plan, not_fit_message, plan_all_gpus, render_gpu_table, render_plan

    options = dict(
        tokens=args.tokens,
        ratio=args.ratio,
        memory_mode=args.memory_mode,
        knob_overrides=dict(parse_knob_assignment(text) for text in args.knob),
        mfu=args.mfu,
        mfu_band=args.mfu_band,
        price_per_kwh=args.price_kwh,
        currency=args.currency,
        host_power_w=args.host_watts,
        total_batch_tokens=args.total_batch,
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
