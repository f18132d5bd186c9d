"""Plans as text: the `nanochat-hf plan` report, the table across GPUs, and the README section.

`render_plan` and `render_gpu_table` print plans (`plan.py`); `render_readme` writes the section
"Can I train d32 on my GPU?" in `docs/can_i_train_d32.md` from the planner's own output
(`python -m nanochat_hf.planning.report --readme`; a test fails when the committed file is stale).
"""

import argparse
import sys
from pathlib import Path

from nanochat_hf.atomic import write_text_atomically
from nanochat_hf.defaults import SEQUENCE_LEN, VOCAB_SIZE
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpt2_report import GPT2_PAGE_PATH, render_gpt2_page
from nanochat_hf.planning.gpus import GIB
from nanochat_hf.planning.memory import ALLOCATOR_MARGIN
from nanochat_hf.planning.plan import Plan, make_plan, plan_all_gpus
from nanochat_hf.planning.time_energy import (
    DAYS_PER_MONTH,
    DEFAULT_CURRENCY,
    DEFAULT_MFU,
    DEFAULT_MFU_BAND,
    DEFAULT_PRICE_PER_KWH,
)


# The seed document's claim this planner replaces.
SEED_CLAIM = "d32 on one RTX 4070 in 4-6 weeks via 3-4-bit quantization (QLoRA / NF4 / GPTQ)"

README_PATH = Path(__file__).resolve().parents[2] / "docs" / "can_i_train_d32.md"


def _fmt_days(days: float) -> str:
    if days < 2:
        return f"{days * 24:.1f} h"
    return f"{days:.0f} d" if days >= 10 else f"{days:.1f} d"


def _fmt_day_range(days: list[float]) -> str:
    """Several durations in one unit: days, or hours when the shortest is under two days."""
    if min(days) < 2:
        return " / ".join(f"{d * 24:.0f}" for d in days) + " h"
    return " / ".join(f"{d:.0f}" if d >= 10 else f"{d:.1f}" for d in days)


def _fmt_months(days: float) -> str:
    months = days / DAYS_PER_MONTH
    if months >= 1:
        return f"{months:.1f} months"
    weeks = days / 7
    return f"{weeks:.1f} weeks" if weeks >= 1 else _fmt_days(days)


def _table(rows: list[list[str]], align: str) -> list[str]:
    """Plain text table; `align` has one 'l' or 'r' per column."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if a == "l" else cell.rjust(w) for cell, w, a in zip(row, widths, align, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _knob_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def _knob_flags(overrides: dict) -> str:
    return " ".join(f"--knob {name}={_knob_value(value)}" for name, value in sorted(overrides.items()))


def plan_command(plan: Plan) -> str | None:
    """The `nanochat-hf plan` command that prints this same plan, or None for a shape it cannot name.

    A recipe's dry run prints it under its plan: both are `make_plan` of the same inputs.
    """
    s, h = plan.shape, plan.horizon
    if ModelShape.from_depth(s.n_layer, s.vocab_size, s.sequence_len) != s:
        return None
    parts = [f"nanochat-hf plan --depth {s.n_layer} --gpu {plan.gpu.key}"]
    if plan.requested_mode != "auto":
        parts.append(f"--memory-mode {plan.requested_mode}")
    if plan.knob_overrides:
        parts.append(_knob_flags(plan.knob_overrides))
    parts.append(f"--target-tokens {h.tokens} --total-batch-size {h.total_batch_size}")
    if s.vocab_size != VOCAB_SIZE:
        parts.append(f"--vocab-size {s.vocab_size}")
    if s.sequence_len != SEQUENCE_LEN:
        parts.append(f"--sequence-len {s.sequence_len}")
    if plan.price_per_kwh != DEFAULT_PRICE_PER_KWH or plan.currency != DEFAULT_CURRENCY:
        parts.append(f"--price-per-kwh {plan.price_per_kwh:g} --currency {plan.currency}")
    if plan.host_power_w:
        parts.append(f"--host-watts {plan.host_power_w:g}")
    if plan.chosen_mfu != DEFAULT_MFU:
        parts.append(f"--mfu {plan.chosen_mfu:g}")
    if (plan.times[0].mfu, plan.times[-1].mfu) != tuple(DEFAULT_MFU_BAND):
        parts.append(f"--mfu-band {plan.times[0].mfu:g},{plan.times[-1].mfu:g}")
    return " ".join(parts)


def render_plan(plan: Plan) -> str:
    s, p, g, m, h = plan.shape, plan.params, plan.gpu, plan.memory, plan.horizon
    gpu_desc = f"{g.name}" + (f" ({g.num_gpus} GPUs)" if g.num_gpus > 1 else "")
    out = [
        f"Plan: nanochat d{plan.depth} on {gpu_desc}: {g.memory_gib:g} GiB per GPU, "
        f"{g.bf16_tflops:g} TFLOP/s dense BF16 per GPU, {g.board_power_w:g} W per GPU",
        "",
        f"Model: width {s.n_embd}, {s.n_head} heads of {s.head_dim}, {s.n_layer} layers, vocab {s.vocab_size:,}, "
        f"sequence {s.sequence_len:,}",
        f"  parameters       {p.total:,} total = {p.matmul:,} matmul (blocks {p.blocks:,} + lm_head {p.lm_head:,}"
        + (f" + smear gate {p.smear_gate}" if p.smear_gate else "")
        + f") + {p.embedding:,} embedding (wte)"
        + (f" + {p.value_embeds:,} value embeddings" if p.value_embeds else "")
        + (f" + {p.scalars - p.smear_gate:,} scalars" if p.scalars - p.smear_gate else ""),
        f"  FLOPs per token  {plan.flops_per_token:,} ({plan.flops_per_token:.4e}) = 6 x {p.matmul:,} + attention "
        f"{plan.attention_flops_per_token:,}",
        f"  training         {h.steps:,} steps x {h.total_batch_size:,} tokens = {h.tokens:,} tokens "
        f"({h.describe_source()}; {h.tokens_per_param:.1f} tokens/parameter)",
        f"  total FLOPs      {h.total_flops:.4e}",
        "",
        f"Memory mode '{m.mode}'" + (" (auto)" if plan.requested_mode == "auto" else "") + f": {m.knobs.describe()}",
        f"  GPU memory per GPU at micro-batch {m.micro_batch} x {s.sequence_len:,} tokens:",
    ]
    rows = [
        ["component", "GiB"],
        ["weights", f"{m.static.gpu_weights / GIB:.2f}"],
        ["gradients", f"{m.static.gpu_gradients / GIB:.2f}"],
        ["optimizer state", f"{m.static.gpu_optimizer_state / GIB:.2f}"],
        ["bf16 weight copies (autocast)", f"{m.static.gpu_weight_cast_copies / GIB:.2f}"],
        ["activations (compiled .. eager)", f"{m.activations_compiled / GIB:.2f} .. {m.activations_eager / GIB:.2f}"],
        ["logits / loss", f"{m.logits / GIB:.2f}"],
        *([["gathered embedding rows (+ grads)", f"{m.embedding_rows / GIB:.2f}"]] if m.embedding_rows else []),
        ["CUDA context", f"{m.cuda_context / GIB:.2f}"],
        [f"allocator margin ({ALLOCATOR_MARGIN:.0%})", f"{m.margin / GIB:.2f}"],
        ["total (eager)", f"{m.total / GIB:.2f}"],
    ]
    out += ["    " + line for line in _table(rows, "lr")]
    verdict = (
        f"fits: {m.total / GIB:.2f} of {m.capacity / GIB:.2f} GiB ({(m.capacity - m.total) / GIB:.2f} GiB spare)"
        if m.fits
        else f"DOES NOT FIT: {m.total / GIB:.2f} GiB needed, {m.capacity / GIB:.2f} GiB on the card"
    )
    out.append(f"  -> {verdict}")
    st = m.static
    if m.knobs.embedding_location == "cpu_rows":
        out.append(
            f"  CPU RAM: wte + value embeddings fp32 {st.cpu_master_weights / GIB:.2f} + fp32 gradient sums "
            f"{st.cpu_gradients / GIB:.2f} + AdamW moments {st.cpu_optimizer_state / GIB:.2f} + pinned row staging "
            f"{st.cpu_pinned_staging / GIB:.2f} = {st.cpu_total / GIB:.2f} GiB -> system RAM >= {m.system_ram_gib} GiB"
        )
    elif st.cpu_total:
        out.append(
            f"  CPU RAM: fp32 master {st.cpu_master_weights / GIB:.2f} + fp32 gradient sums {st.cpu_gradients / GIB:.2f}"
            f" + optimizer state {st.cpu_optimizer_state / GIB:.2f} + pinned staging {st.cpu_pinned_staging / GIB:.2f}"
            f" = {st.cpu_total / GIB:.2f} GiB -> system RAM >= {m.system_ram_gib} GiB"
        )
    else:
        out.append(f"  CPU RAM: nothing offloaded -> system RAM >= {m.system_ram_gib} GiB")
    out.append(
        f"  Batch: micro-batch {m.micro_batch} x {s.sequence_len:,} tokens x {g.num_gpus} GPU(s), "
        f"{m.grad_accum_steps} accumulation steps per optimizer step of {h.total_batch_size:,} tokens"
    )
    others = ", ".join(
        f"{name} {plan_.total / GIB:.1f} GiB {'fits' if plan_.fits else 'no'}" for name, plan_ in plan.modes.items()
    )
    assumed = f"; with {_knob_flags(plan.knob_overrides)}" if plan.knob_overrides else ""
    out.append(f"  All modes (GiB at their micro-batch{assumed}): {others}")
    if not m.fits:
        out.append(f"  {plan.suggestion}")

    out += [
        "",
        f"Time and energy (MFU band {plan.times[0].mfu:.0%}-{plan.times[-1].mfu:.0%}, chosen {plan.chosen_mfu:.0%}):",
    ]
    power = g.total_board_power_w + plan.host_power_w
    rows = [
        [
            "MFU",
            "model MFU",
            "micro-step",
            "optimizer update",
            "whole step",
            "overhead",
            "days",
            "months",
            f"kWh @{power:g} W",
            f"{plan.currency} @{plan.price_per_kwh:g}/kWh",
        ]
    ]
    for t in plan.times:
        rows.append(
            [
                f"{t.mfu:.0%}" + (" *" if t.mfu == plan.chosen_mfu else ""),
                f"{t.model_mfu:.0%}",
                f"{t.micro_step_seconds:.2f} s",
                f"{t.optimizer_step_seconds:.1f} s",
                f"{t.step_seconds:,.0f} s",
                f"{t.overhead_fraction:.1%}",
                f"{t.days:,.1f}",
                f"{t.months:.1f}",
                f"{t.energy_kwh:,.0f}",
                f"{t.cost:,.0f}",
            ]
        )
    out += ["  " + line for line in _table(rows, "rrrrrrrrrr")]
    out += [
        "  micro-step: forward + backward of one micro-batch; optimizer update: the update alone (Newton-Schulz and",
        f"  offload work that does not overlap compute); whole step: {m.grad_accum_steps} micro-steps + the update;"
        " overhead: update / micro-steps.",
    ]
    floor = f"  Floor: {plan.floor_days():,.1f} days at 100 % of the BF16 peak"
    if plan.floor_days(fp8=True) is not None:
        floor += f", {plan.floor_days(fp8=True):,.1f} days at 100 % of the FP8 peak"
    out.append(floor + " (no run is faster).")
    out.append(
        "  Energy is hours x board power: an upper bound for the GPU alone"
        + (
            f", plus {plan.host_power_w:g} W for the host."
            if plan.host_power_w
            else "; a desktop host adds ~60-120 W (--host-watts)."
        )
    )
    if plan.notes:
        out += ["", "Notes:"] + [f"  - {note}" for note in plan.notes]
    return "\n".join(out) + "\n"


def gpu_table_rows(plans: list[Plan]) -> list[list[str]]:
    band = [t.mfu for t in plans[0].times]
    currency, price = plans[0].currency, plans[0].price_per_kwh
    header = [
        "GPU",
        "memory",
        "mode (auto)",
        "micro-batch x accum",
        "GPU GiB",
        "system RAM",
        "days @ " + " / ".join(f"{x:.0%}" for x in reversed(band)) + " MFU",
        f"at {plans[0].chosen_mfu:.0%}",
        f"kWh at {plans[0].chosen_mfu:.0%}",
        f"{currency} @{price:g}/kWh",
    ]
    rows = [header]
    for plan in plans:
        g, m, t = plan.gpu, plan.memory, plan.chosen_time
        name = g.name.replace("NVIDIA GeForce ", "").replace("NVIDIA ", "")
        memory = f"{g.memory_gib:g} GiB" + (f" x {g.num_gpus}" if g.num_gpus > 1 else "")
        if not m.fits:
            rows.append([name, memory, "none fits", "-", f"{m.total / GIB:.1f} (8gb)", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                name,
                memory,
                m.mode,
                f"{m.micro_batch} x {m.grad_accum_steps}",
                f"{m.total / GIB:.1f}",
                f"{m.system_ram_gib} GiB",
                _fmt_day_range([x.days for x in reversed(plan.times)]),
                _fmt_months(t.days),
                f"{t.energy_kwh:,.0f}",
                f"{t.cost:,.0f}",
            ]
        )
    return rows


def render_gpu_table(plans: list[Plan]) -> str:
    first = plans[0]
    out = [
        f"d{first.depth}: {first.params.total:,} parameters, {first.horizon.tokens:,} tokens, "
        f"{first.horizon.total_flops:.3e} FLOPs, on each GPU of the table (memory mode: {first.requested_mode})",
        "",
    ]
    out += _table(gpu_table_rows(plans), "llllrrrrrr")
    out += [
        "",
        "Days include the optimizer step and, for offloading modes, the exposed offload time; energy is GPU board",
        "power only. 'none fits': even the 8gb mode needs more than the card has (its need in GiB is shown).",
    ]
    return "\n".join(out) + "\n"


def _md_table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return lines


def render_readme() -> str:
    """The README section "Can I train d32 on my GPU?", from the planner's own output (deterministic)."""
    plans = plan_all_gpus(32, price_per_kwh=0.30, currency="USD")
    by_key = {plan.gpu.key: plan for plan in plans}
    rtx4070 = by_key["rtx4070"]
    t = {x.mfu: x for x in rtx4070.times}
    low, mid, high = t[0.5], t[0.4], t[0.3]
    cheap = make_plan(32, "rtx4070", price_per_kwh=0.10)
    pc = make_plan(32, "rtx4070", price_per_kwh=0.30, host_power_w=100)
    p, h, m = rtx4070.params, rtx4070.horizon, rtx4070.memory
    needed_tflops = (h.total_flops / (6 * 7 * 86400) / 1e12, h.total_flops / (4 * 7 * 86400) / 1e12)
    out = [
        "## Can I train d32 on my GPU?",
        "",
        "<!-- Generated by `python -m nanochat_hf.planning.report --readme` from nanochat_hf/planning/ and",
        "     nanochat_hf/planning/gpus.csv; tests/test_planner.py fails if this file is stale. Do not edit by hand. -->",
        "",
        f"nanochat's d32 has {p.total:,} parameters and is pretrained on {h.tokens:,} tokens "
        f"(20 per parameter): {h.total_flops:.3e} FLOPs. It **fits** a 12 GB RTX 4070 with the `12gb` memory "
        f"mode ({m.total / GIB:.1f} GiB planned on the GPU, {m.static.cpu_total / GIB:.0f} GiB of state in CPU RAM, "
        f"so {m.system_ram_gib} GiB of system RAM), but it takes **{_fmt_months(mid.days)}** "
        f"({mid.days:.0f} days at 40 % MFU; {low.days:.0f}-{high.days:.0f} days at 50-30 %).",
        "",
        f'The document this project started from promised "{SEED_CLAIM}". The arithmetic says otherwise:',
        "",
        f"- **Time.** 4-6 weeks would need {needed_tflops[0]:.0f}-{needed_tflops[1]:.0f} TFLOP/s sustained, "
        f"{needed_tflops[0] / rtx4070.gpu.bf16_tflops:.1f}-{needed_tflops[1] / rtx4070.gpu.bf16_tflops:.1f}x the "
        f"card's dense BF16 peak ({rtx4070.gpu.bf16_tflops:g} TFLOP/s). Even at 100 % of that peak d32 takes "
        f"{rtx4070.floor_days():.0f} days, and at 100 % of the FP8 peak {rtx4070.floor_days(fp8=True):.0f} days.",
        "- **Quantization.** 3-4-bit formats (QLoRA's NF4, GPTQ, EXL2, GGUF) store the frozen weights of an "
        "*already trained* model; QLoRA trains small adapters on top. From random initialisation nothing would "
        "learn, and 4-bit weights are de-quantised to bf16 for every matmul anyway, so they are not faster. What "
        "makes d32 fit is offloading the fp32 master weights, gradient sums and optimizer state to CPU RAM; the "
        "only low-bit path that makes pretraining faster is FP8 matmuls (compute capability >= 8.9), measured at "
        "1.05-1.17x in nanochat.",
        f"- **Energy.** The same document's 150-200 kWh and 15-40 USD become {mid.energy_kwh:,.0f} kWh for the GPU "
        f"alone at 40 % MFU ({pc.chosen_time.energy_kwh:,.0f} kWh with ~100 W for the rest of the PC): "
        f"{cheap.chosen_time.cost:,.0f} USD at 0.10 USD/kWh, {mid.cost:,.0f} USD at 0.30 USD/kWh "
        f"({pc.chosen_time.cost:,.0f} USD for the whole PC).",
        "",
        "d32 on each GPU, with the memory mode the planner picks (`auto`: the least offloading mode that fits), "
        "the largest micro-batch that fits and nanochat's batch of 524,288 tokens per optimizer step:",
        "",
    ]
    out += _md_table(gpu_table_rows(plans))
    out += [
        "",
        "Memory modes: `full` = nanochat as is (fp32 weights, gradients and optimizer state on the GPU); `24gb` = "
        "fp32 weights and gradients with 8-bit optimizer state on the GPU; `12gb` = bf16 weights on the GPU, "
        "gradients streamed per layer to CPU RAM and summed in fp32 there, fp32 master weights and optimizer "
        "state in CPU RAM (no activation checkpointing); `8gb` = `12gb` plus activation checkpointing (+31 % "
        "compute for d32). GPU GiB is the planned peak with eager activations, the CUDA context and a 5 % margin.",
        "",
        "Smaller models on the same cards (days at 40 % MFU, memory mode picked by the planner):",
        "",
    ]
    rows = [
        ["model", "parameters", "tokens", "FLOPs"]
        + [by_key[k].gpu.name.replace("NVIDIA GeForce ", "") for k in ("rtx4070", "rtx4090", "8xh100")]
    ]
    for depth in (20, 26, 32):
        depth_plans = [make_plan(depth, key) for key in ("rtx4070", "rtx4090", "8xh100")]
        first = depth_plans[0]
        rows.append(
            [
                f"d{depth}",
                f"{first.params.total / 1e9:.2f} B",
                f"{first.horizon.tokens / 1e9:.1f} B",
                f"{first.horizon.total_flops:.2e}",
            ]
            + [f"{_fmt_days(x.chosen_time.days)} ({x.memory.mode})" for x in depth_plans]
        )
    out += _md_table(rows)
    out += [
        "",
        "How these numbers are made: FLOPs/token = 6 x (parameters - embedding) + 12 x layers x width x 2048 "
        "(nanochat's own formula); days = total FLOPs / (MFU x dense BF16 peak), plus the optimizer step (Muon's "
        "Newton-Schulz on the GPU) and, for offloading modes, the PCIe copies and CPU work that cannot overlap "
        "with compute; energy = hours x board power. MFU 30-50 % is the planning band (nanochat's d32 run on "
        "8 x H100 reached 50.9 %); none of it is measured on these cards yet. For your own card, budget and "
        "price: `nanochat-hf plan --depth 32 --gpu rtx4070 --mfu 0.4 --price-per-kwh 0.30 --currency USD` "
        "(`--all-gpus` for the table, `--json` for every number). The formulas are documented in "
        "`nanochat_hf/planning/` (`memory.py`, `time_energy.py`); every GPU figure has its source in "
        "`nanochat_hf/planning/gpus.csv`.",
        "",
    ]
    return "\n".join(out)


def write_readme(path: Path = README_PATH) -> Path:
    """Write `render_readme()` to `path` atomically (temp file, then rename)."""
    return write_text_atomically(path, render_readme())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nanochat_hf.planning.report", description=__doc__.splitlines()[0])
    parser.add_argument("--readme", action="store_true", help=f"write the README section to {README_PATH}")
    parser.add_argument("--output", type=Path, default=README_PATH, help="where --readme writes")
    args = parser.parse_args(argv)
    if not args.readme:
        parser.print_help()
        return 2
    print(f"wrote {write_readme(args.output)}")
    print(f"wrote {write_text_atomically(GPT2_PAGE_PATH, render_gpt2_page())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
