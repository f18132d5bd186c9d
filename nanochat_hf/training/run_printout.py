"""What a pretraining run prints before it trains (and all a dry run prints): its settings and its plan.

The plan is `make_plan` of the run's own shape, horizon, memory mode and knobs, so it is the report
`nanochat-hf plan` prints for the same inputs; the command that reproduces it is printed below it.
"""

from ..planning.flops import ModelShape
from ..planning.gpus import resolve_gpu
from ..planning.horizon import Horizon
from ..planning.plan import make_plan
from ..planning.report import plan_command, render_plan
from ..planning.time_energy import DEFAULT_PRICE_PER_KWH
from .arguments import PretrainArguments


def print_settings(settings: dict) -> None:
    print("Resolved pretraining settings:")
    for section, values in settings.items():
        if isinstance(values, dict):
            print(f"  {section}:")
            for key, value in values.items():
                shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
                if isinstance(value, float) and value > 1e6:
                    shown = f"{value:.4e}"
                print(f"    {key:<28} {shown}")
        else:
            print(f"  {section:<30} {values}")


def print_hardware_plan(args: PretrainArguments, shape: ModelShape, horizon: Horizon, knobs: dict) -> None:
    """The planner's full report (memory, time, energy) for this run on the named or detected GPU."""
    gpu = resolve_gpu(args.gpu)
    if gpu is None or not gpu.listed:
        found = "No GPU detected" if gpu is None else f"The GPU {gpu.name!r} is not in the GPU table"
        print(f"\n{found} and no --gpu given: for memory and time estimates run e.g.")
        print(f"  nanochat-hf plan --depth {shape.n_layer} --gpu rtx4070")
        return
    plan = make_plan(
        shape.n_layer,
        gpu=gpu,
        memory_mode=args.memory_mode,
        knob_overrides=knobs,
        shape=shape,
        target_tokens=horizon.tokens,
        total_batch_size=horizon.total_batch_size,
        price_per_kwh=args.price_per_kwh if args.price_per_kwh is not None else DEFAULT_PRICE_PER_KWH,
        currency=args.currency,
    )
    print()
    print(render_plan(plan), end="")
    command = plan_command(plan)
    if command is not None:
        print(f"The same plan (every mode with this run's knobs): {command}\n")
