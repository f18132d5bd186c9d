"""Planner numbers against nanochat's own and the hand derivation in docs/memory-and-time.md, error paths, CLI, README."""

import dataclasses
import json

import pytest

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.planning.choice import require_fit
from nanochat_hf.planning.flops import (
    ModelShape,
    flops_per_token,
    newton_schulz_flops,
    param_counts,
    recompute_flops_per_token,
)
from nanochat_hf.planning.gpus import GIB, get_gpu
from nanochat_hf.planning.horizon import training_horizon
from nanochat_hf.planning.host_sum_time import host_sum_seconds
from nanochat_hf.planning.memory import plan_memory, static_memory
from nanochat_hf.planning.memory_modes import MEMORY_MODES, knobs_for_mode
from nanochat_hf.planning.plan import make_plan, plan_all_gpus
from nanochat_hf.planning.report import README_PATH, render_gpu_table, render_plan, render_readme
from nanochat_hf.planning.time_energy import HOST_DRAM_GBS


# ---------------------------------------------------------------------------------------------------------
# Parameters, FLOPs, horizon: nanochat's printouts (generation 1, exact) and d21 at the 2026 width of 1408

SPEC_COUNTS = {
    # depth: (width, heads, total params, wte, FLOPs/token, iterations, tokens, total FLOPs)
    20: (1280, 10, 560_988_160, 83_886_080, 3_491_758_080, 21_400, 11_219_763_200, 3.9177e19),
    21: (1408, 11, 684_130_304, 92_274_688, 4.2778e9, 26_097, 13_682_343_936, 5.853e19),
    26: (1664, 13, 1_081_999_360, 109_051_904, 6_900_940_800, 41_275, 21_639_987_200, 1.4934e20),
    32: (2048, 16, 1_879_048_192, 134_217_728, 12_079_595_520, 71_680, 37_580_963_840, 4.5396e20),
}


@pytest.mark.parametrize("depth", sorted(SPEC_COUNTS))
def test_counts_flops_and_horizon_match_the_spec(depth):
    width, heads, total, wte, fpt, iterations, tokens, total_flops = SPEC_COUNTS[depth]
    shape = ModelShape.from_depth(depth)
    counts = param_counts(shape)
    assert (shape.n_embd, shape.n_head, shape.head_dim) == (width, heads, 128)
    assert counts.total == total and counts.embedding == counts.lm_head == wte
    assert counts.matmul == total - wte
    if isinstance(fpt, int):
        assert flops_per_token(shape) == fpt
    else:
        assert flops_per_token(shape) == pytest.approx(fpt, rel=1e-4)
    horizon = training_horizon(shape)
    assert (horizon.steps, horizon.tokens) == (iterations, tokens)
    assert horizon.total_flops == pytest.approx(total_flops, rel=1e-4)


def test_d32_matches_nanochat_printout():
    # run1000.sh at 16788ee: "Estimated FLOPs per token: 1.207960e+10 ... Total training FLOPs estimate: 4.539628e+20"
    plan = make_plan(32, "rtx4070")
    assert f"{plan.flops_per_token:e}" == "1.207960e+10"
    assert f"{plan.horizon.total_flops:e}" == "4.539628e+20"
    assert plan.params.total == 1_879_048_192


def test_d21_is_planned_with_the_2026_width_and_says_so():
    plan = make_plan(21, "rtx4070")
    assert plan.shape.n_embd == 1408 and not plan.shape.gen1_buildable
    assert any("cannot build d21" in note for note in plan.notes)
    assert ModelShape.from_depth(20).gen1_buildable and ModelShape.from_depth(32).gen1_buildable


def test_flops_formula_on_a_real_model():
    # 6 * (N - N_wte) + 12 * L * H * hd * T with N counted from a built model (nanochat's estimate_flops)
    config = NanoChatHFConfig(n_layer=3, n_embd=128, n_head=2, n_kv_head=1, vocab_size=300, sequence_len=48)
    model = NanoChatHFForCausalLM(config)
    n_total = sum(p.numel() for p in model.parameters())
    n_wte = model.transformer.wte.weight.numel()
    shape = ModelShape.from_config(config)
    assert param_counts(shape).total == n_total == model.num_parameters()
    assert flops_per_token(shape) == 6 * (n_total - n_wte) + 12 * 3 * 2 * 64 * 48
    assert ModelShape.from_config(NanoChatHFConfig.from_depth(26)) == ModelShape.from_depth(26)


def test_tokens_option_rounds_down_to_whole_steps():
    horizon = training_horizon(ModelShape.from_depth(32), target_tokens=38e9)
    assert horizon.steps == 38_000_000_000 // 524_288
    with pytest.raises(UserInputError, match="--target-tokens.* or .*--target-param-data-ratio"):
        make_plan(32, "rtx4070", target_tokens=38e9, target_param_data_ratio=20)


# ---------------------------------------------------------------------------------------------------------
# Memory: the d32 derivation at micro-batch 1 x 2048 in docs/memory-and-time.md

D32 = ModelShape.from_depth(32)


def _gib(n_bytes):
    return n_bytes / GIB


@pytest.mark.parametrize("mode, static_gib", [("full", 24.25), ("24gb", 16.0), ("12gb", 4.2), ("8gb", 4.2)])
def test_d32_static_memory_per_mode(mode, static_gib):
    # Static GPU memory of d32: full 24.25, 24gb 16.0, 12gb and 8gb 4.2 GiB
    assert _gib(static_memory(D32, MEMORY_MODES[mode]).gpu_total) == pytest.approx(static_gib, abs=0.05)


def test_d32_bytes_per_parameter_table():
    # Bytes per parameter for d32: fp32 weights 7.00 GiB, bf16 3.50; Muon fp32 momentum 6.00; AdamW fp32 wte+head 2.00, 8-bit 0.50;
    # autocast copies 3.25
    h = static_memory(D32, MEMORY_MODES["12gb"])
    assert _gib(h.cpu_master_weights) == _gib(h.cpu_gradients) == 7.0
    assert _gib(h.gpu_weights) == 3.5
    assert _gib(h.cpu_optimizer_state) == pytest.approx(6.0 + 2.0, abs=1e-6)  # + two 4-byte AdamW steps
    full = static_memory(D32, MEMORY_MODES["full"])
    assert _gib(full.gpu_weight_cast_copies) == 3.25
    j = static_memory(D32, MEMORY_MODES["24gb"])
    assert _gib(j.gpu_optimizer_state) == pytest.approx(1.5 + 0.5, abs=0.05)


def test_d32_totals_reproduce_the_fit_table():
    # Total = static + 0.4 context + activations + chunked CE 0.15 (the fit table of docs/memory-and-time.md, without margin)
    gpu = get_gpu("rtx4070")

    def total_without_margin(mode, **overrides):
        plan = plan_memory(D32, gpu, mode, knobs_for_mode(mode, micro_batch=1, **overrides))
        return _gib(plan.total_compiled - plan.margin), _gib(plan.total - plan.margin)

    assert total_without_margin("12gb") == pytest.approx((8.0, 9.5), abs=0.05)  # H: 8.0-9.5
    assert total_without_margin("8gb")[1] == pytest.approx(5.2, abs=0.05)  # H + ckpt: 5.2
    assert total_without_margin("full") == pytest.approx((28.1, 29.6), abs=0.1)  # A: 28.1-29.6
    assert total_without_margin("full", activation_checkpointing="block")[1] == pytest.approx(25.3, abs=0.05)
    assert total_without_margin("24gb") == pytest.approx((19.8, 21.3), abs=0.1)  # J: 19.8-21.3
    # 3.25-4.75 GiB of activations without checkpointing, ~0.45-0.5 with; 0.5 GiB of fp32 logits per row
    plan = plan_memory(D32, gpu, "12gb", MEMORY_MODES["12gb"])
    assert (_gib(plan.activations_compiled), _gib(plan.activations_eager)) == (3.25, 4.75)
    ckpt = plan_memory(D32, gpu, "8gb", knobs_for_mode("8gb", micro_batch=1))
    assert 0.38 <= _gib(ckpt.activations_compiled) <= _gib(ckpt.activations_eager) <= 0.5
    whole = plan_memory(D32, gpu, "12gb", knobs_for_mode("12gb", loss_chunk_size=0))
    assert 1.5 <= _gib(whole.logits) <= 2.0  # the eager whole-sequence loss: ~1.5-2 GiB
    assert _gib(plan.logits) == pytest.approx(0.15, abs=0.01)


def test_d32_on_a_4070_reproduces_the_hand_derivation():
    plan = make_plan(32, "rtx4070", mfu_band=(0.3, 0.5), mfu=0.4, price_per_kwh=0.30)
    m = plan.memory
    # auto -> 12gb without checkpointing; 524,288 tokens = 256 micro-steps of 1 x 2048
    assert m.mode == "12gb" and m.fits and m.knobs.activation_checkpointing == "none"
    assert (m.micro_batch, m.grad_accum_steps) == (1, 256)
    # CPU RAM for 12gb: master 7.0 + Muon 6.0 + AdamW 2.0 + gradient sums 7.0 = 22 GiB + staging -> 32 GB minimum
    assert _gib(m.static.cpu_total - m.static.cpu_pinned_staging) == pytest.approx(22.0, abs=1e-6)
    assert m.system_ram_gib == 32
    times = {t.mfu: t for t in plan.times}
    # 2,048 x 1.208e10 FLOPs per micro-step: 1.41 / 1.06 / 0.85 s at 30 / 40 / 50 %; x 256 = 362 / 271 / 217 s
    for mfu, micro, step, days in ((0.3, 1.41, 362, 300), (0.4, 1.06, 271, 225), (0.5, 0.85, 217, 180)):
        t = times[mfu]
        assert t.micro_step_seconds == pytest.approx(micro, abs=0.01)
        assert t.step_seconds - t.optimizer_step_seconds == pytest.approx(step, abs=1)
        assert t.compute_days == pytest.approx(
            days, abs=1
        )  # 4.54e20 FLOPs at 58.3 TFLOP/s x MFU: 300 / 225 / 180 days
        assert t.days > t.compute_days
    # Newton-Schulz 8.25e13 FLOPs per step; offload + optimizer overhead ~1-2 % (the goal is < 5 %)
    assert newton_schulz_flops(D32) == pytest.approx(8.25e13, rel=0.01)
    assert 0.01 <= times[0.4].overhead_fraction <= 0.02
    # 200 W x 5,406 h = 1,081 kWh, 324 USD at 0.30 (compute only; the overhead adds < 2 %)
    assert times[0.4].compute_hours * 0.2 == pytest.approx(1081, abs=2)
    assert times[0.4].energy_kwh == pytest.approx(1081, rel=0.02)
    assert times[0.4].cost == pytest.approx(324, rel=0.02)
    # Floors: 90 days at the BF16 peak and 45 days at the FP8 peak
    assert plan.floor_days() == pytest.approx(90, abs=0.5)
    assert plan.floor_days(fp8=True) == pytest.approx(45, abs=0.5)
    text = render_plan(plan)
    for expected in (
        "1,879,048,192",
        "12,079,595,520",
        "4.5396e+20",
        "fits",
        "system RAM >= 32 GiB",
        "256 accumulation",
    ):
        assert expected in text


@pytest.mark.parametrize(
    "gpu, mode",
    # How d32 fits: the 8 GB laptop only 8gb; 12/16 GiB cards 12gb; 24 GiB cards 24gb; 32 GB+ nanochat's own
    [
        ("rtx4070-laptop", "8gb"),
        ("rtx4060ti-16gb", "12gb"),
        ("rtx4070", "12gb"),
        ("rtx4070-super", "12gb"),
        ("rtx4080", "12gb"),
        ("rtx3090", "24gb"),
        ("rtx4090", "24gb"),
        ("rtx5090", "full"),
        ("a100-80gb", "full"),
        ("h100-sxm", "full"),
    ],
)
def test_auto_picks_the_derived_mode_per_gpu(gpu, mode):
    plan = make_plan(32, gpu)
    assert plan.fits and plan.memory.mode == mode


def test_reference_node_reproduces_nanochats_run():
    # nanochat's run1000.sh: d32 on 8 x H100 with device batch 8 -> 4 accumulation steps; 50.9 % MFU -> 31.3 h
    plan = make_plan(32, "8xh100", mfu=0.509)
    assert plan.memory.mode == "full"
    assert (plan.memory.micro_batch, plan.memory.grad_accum_steps) == (8, 4)
    assert plan.chosen_time.compute_hours == pytest.approx(31.3, rel=0.02)


def test_checkpointing_costs_recompute_time():
    plan = make_plan(32, "rtx4070", memory_mode="8gb", knob_overrides={"micro_batch": 1})
    t = plan.chosen_time
    extra = recompute_flops_per_token(D32) / flops_per_token(D32)
    assert 0.25 < extra < 0.34  # per-block checkpointing: ~+33 % hardware FLOPs
    assert t.model_mfu == pytest.approx(0.4 / (1 + extra))
    assert t.micro_step_seconds == pytest.approx(1.06 * (1 + extra), abs=0.02)


# ---------------------------------------------------------------------------------------------------------
# Errors and suggestions


def test_mode_that_does_not_fit_suggests_the_nearest_that_does():
    plan = make_plan(32, "rtx4070", memory_mode="full")
    assert not plan.fits
    assert "--memory-mode 12gb" in plan.suggestion  # 24gb does not fit 12 GiB either
    with pytest.raises(UserInputError) as err:
        require_fit(plan)
    message = str(err.value)
    assert "'full' does not fit d32" in message and "GiB" in message and "12gb" in message
    laptop = make_plan(32, "rtx4070-laptop", memory_mode="12gb")
    assert not laptop.fits and "--memory-mode 8gb" in laptop.suggestion


def test_nothing_fits_suggests_a_smaller_depth():
    tiny_card = dataclasses.replace(get_gpu("rtx4070"), key="tiny", memory_gib=3)
    plan = make_plan(32, tiny_card)
    assert not plan.fits
    suggested = int(plan.suggestion.split("is d")[1].split(" ")[0])
    assert make_plan(suggested, tiny_card).fits
    assert not make_plan(suggested + 1, tiny_card).fits


def test_overrides_that_only_suit_some_modes_leave_the_others_out():
    plan = make_plan(32, "rtx4070", knob_overrides={"weights_dtype": "bfloat16"})  # invalid for full and 24gb
    assert set(plan.modes) == {"12gb", "8gb"} and plan.memory.mode == "12gb"
    plan = make_plan(32, "rtx4070", memory_mode="8gb", knob_overrides={"grad_bucket_layers": 4})
    assert plan.memory.knobs.grad_bucket_layers == 4 and plan.fits


def test_explicit_offloading_mode_mentions_a_faster_one():
    plan = make_plan(20, "h100-sxm", memory_mode="12gb")
    assert plan.fits and any("'full' also fits" in note for note in plan.notes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gpu="rtx9090"), "known GPUs: rtx4070"),
        (dict(memory_mode="4gb"), "unknown memory mode"),
        (dict(mfu=1.5), "mfu"),
        (dict(knob_overrides={"micro_batch": 3}), "not a multiple"),
        (dict(memory_mode="full", knob_overrides={"weights_dtype": "bfloat16"}), "fp32 master"),
        (dict(knob_overrides={"weights_dtype": "float16"}), "weights_dtype"),
        (dict(depth=0), "depth"),
    ],
)
def test_bad_input_raises_user_input_errors(kwargs, message):
    kwargs = {"depth": 32, "gpu": "rtx4070", **kwargs}
    with pytest.raises(UserInputError, match=message):
        make_plan(kwargs.pop("depth"), kwargs.pop("gpu"), **kwargs)


# ---------------------------------------------------------------------------------------------------------
# GPU table, CLI, README


def test_gpu_table_replaces_the_seed_claim():
    plans = plan_all_gpus(32)
    rtx4070 = next(plan for plan in plans if plan.gpu.key == "rtx4070")
    # The seed said 4-6 weeks; even at 100 % of the BF16 peak it is 90 days.
    assert rtx4070.chosen_time.days > rtx4070.floor_days() > 6 * 7 * 2
    text = render_gpu_table(plans)
    assert all(plan.gpu.name.replace("NVIDIA GeForce ", "").replace("NVIDIA ", "") in text for plan in plans)
    assert "7.5 months" in text


def test_cli_json_parses(capsys):
    assert cli_main(["plan", "--depth", "32", "--gpu", "rtx4070", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"]["total"] == 1_879_048_192 and data["params"]["matmul"] == 1_744_830_464
    assert data["memory"]["mode"] == "12gb" and data["fits"] is True
    assert data["memory"]["gpu_bytes"]["total"] <= data["memory"]["gpu_bytes"]["capacity"]
    assert [t["mfu"] for t in data["times"]] == [0.3, 0.4, 0.5]


def test_cli_options_and_exit_codes(capsys):
    assert (
        cli_main(["plan", "--gpu", "rtx4070", "--memory-mode", "full", "--price-per-kwh", "3.5", "--currency", "NTD"])
        == 1
    )
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out and "NTD @3.5/kWh" in captured.out
    assert "--memory-mode 12gb" in captured.err
    assert cli_main(["plan", "--gpu", "rtx9090"]) == 2
    assert "known GPUs" in capsys.readouterr().err
    assert cli_main(["plan", "--gpu", "rtx4070", "--knob", "micro_batch=3"]) == 2
    assert cli_main(["plan", "--depth", "20", "--all-gpus", "--json", "--target-param-data-ratio", "10"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(plan_all_gpus(20)) and all(row["horizon"]["tokens_per_param"] < 10.01 for row in rows)


def test_committed_readme_section_is_fresh():
    assert README_PATH.read_text(encoding="utf-8") == render_readme(), (
        "docs/can_i_train_d32.md is stale: run `python -m nanochat_hf.planning.report --readme`"
    )


# ---------------------------------------------------------------------------------------------------------
# `nanochat-hf plan` prints what it printed before the planner became nanochat_hf/planning/ (captured on the
# last commit with nanochat_hf/planner.py), and its flags are named as the recipe's fields.

PINNED_PLAN_LINES = {
    ("--depth", "32", "--gpu", "rtx4070"): [
        "training         71,680 steps x 524,288 tokens = 37,580,963,840 tokens (ratio 20 x parameters; 20.0 "
        "tokens/parameter)",
        "    total (eager)                           10.09",
        "  -> fits: 10.09 of 12.00 GiB (1.91 GiB spare)",
        "  CPU RAM: fp32 master 7.00 + fp32 gradient sums 7.00 + optimizer state 8.00 + pinned staging 0.69 = "
        "22.69 GiB -> system RAM >= 32 GiB",
        "  All modes (GiB at their micro-batch): full 30.2 GiB no, 24gb 21.9 GiB no, 12gb 10.1 GiB fits, 8gb "
        "8.9 GiB fits",
        "    30%        30%      1.41 s             6.0 s       368 s      1.7%  305.4    10.0       1,466           440",
        "  40% *        40%      1.06 s             4.8 s       276 s      1.8%  229.3     7.5       1,101           330",
        "    50%        50%      0.85 s             4.1 s       221 s      1.9%  183.6     6.0         881           264",
        "  Floor: 90.1 days at 100 % of the BF16 peak, 45.1 days at 100 % of the FP8 peak (no run is faster).",
    ],
    (
        "--depth",
        "32",
        "--gpu",
        "rtx4090",
        "--memory-mode",
        "24gb",
        "--target-tokens",
        "1e10",
        "--price-per-kwh",
        "0.1",
        "--currency",
        "EUR",
        "--host-watts",
        "100",
        "--total-batch-size",
        "262144",
    ): [
        "  training         38,146 steps x 262,144 tokens = 9,999,745,024 tokens (1e+10 tokens; 5.3 tokens/parameter)",
        "  -> fits: 22.54 of 24.00 GiB (1.46 GiB spare)",
        "  Batch: micro-batch 1 x 2,048 tokens x 1 GPU(s), 128 accumulation steps per optimizer step of 262,144 tokens",
        "  40% *        40%      0.37 s             1.2 s        49 s      2.6%  21.7     0.7         287            29",
    ],
    (
        "--depth",
        "26",
        "--gpu",
        "rtx4070",
        "--target-param-data-ratio",
        "10",
        "--mfu",
        "0.35",
        "--mfu-band",
        "0.25,0.45",
        "--knob",
        "micro_batch=2",
    ): [
        "  training         20,637 steps x 524,288 tokens = 10,819,731,456 tokens (ratio 10 x parameters; 10.0 "
        "tokens/parameter)",
        "  -> fits: 9.97 of 12.00 GiB (2.03 GiB spare)",
        "  35% *        35%      1.39 s             2.5 s       180 s      1.4%  42.9     1.4         206            62",
    ],
    ("--depth", "20", "--all-gpus"): [
        "RTX 4070                                  12 GiB      full         1 x 256                 10.2      16 GiB"
        "                16 / 20 / 26  2.8 weeks          94            28",
        "8 x H100 SXM (nanochat's reference node)  80 GiB x 8  full         32 x 1                  71.1      16 GiB"
        "                 3 / 3 / 5 h      3.5 h          19             6",
    ],
}


@pytest.mark.parametrize("argv", list(PINNED_PLAN_LINES), ids=lambda argv: " ".join(argv[:4]))
def test_plan_prints_the_pinned_numbers(argv, capsys):
    assert cli_main(["plan", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    for expected in PINNED_PLAN_LINES[argv]:
        assert any(line.strip() == expected.strip() for line in lines), expected


@pytest.mark.parametrize(
    "old, new",
    [
        (["--tokens", "1e10"], ["--target-tokens", "1e10"]),
        (["--ratio", "10"], ["--target-param-data-ratio", "10"]),
        (["--price-kwh", "0.1"], ["--price-per-kwh", "0.1"]),
        (["--total-batch", "262144"], ["--total-batch-size", "262144"]),
    ],
)
def test_old_flag_spellings_still_work_with_a_warning(old, new, capsys):
    assert cli_main(["plan", "--gpu", "rtx4070", *new]) == 0
    expected = capsys.readouterr().out
    underscored = [new[0].replace("-", "_").replace("__", "--"), new[1]]
    assert cli_main(["plan", "--gpu", "rtx4070", *underscored]) == 0  # the recipe's spelling, as in YAML
    assert capsys.readouterr().out == expected
    with pytest.warns(FutureWarning, match=f"{old[0]} is deprecated.*use {new[0]}"):
        assert cli_main(["plan", "--gpu", "rtx4070", *old]) == 0
    assert capsys.readouterr().out == expected


def test_plan_flags_are_the_recipe_field_names():
    from nanochat_hf.cli import build_parser
    from nanochat_hf.training import PretrainArguments

    plan_parser = build_parser()._subparsers._group_actions[0].choices["plan"]
    flags = {option for action in plan_parser._actions for option in action.option_strings}
    fields = {f.name for f in dataclasses.fields(PretrainArguments)}
    for name in (
        "depth",
        "gpu",
        "target_tokens",
        "target_param_data_ratio",
        "memory_mode",
        "price_per_kwh",
        "currency",
        "total_batch_size",
    ):
        assert name in fields and f"--{name}" in flags and f"--{name.replace('_', '-')}" in flags, name


def test_the_unlisted_gpu_is_planned_for_memory_but_not_for_time():
    from nanochat_hf.planning.choice import choose_mode
    from nanochat_hf.planning.gpus import unlisted_gpu

    card = unlisted_gpu("NVIDIA GeForce RTX 4070 Ti", 12 * GIB, (8, 9))
    choice = choose_mode(D32, card)
    assert choice.fits and choice.memory.mode == "12gb" and choice.memory.capacity == 12 * GIB
    with pytest.raises(UserInputError, match="'NVIDIA GeForce RTX 4070 Ti' .* not in .*gpus.csv.*--gpu"):
        make_plan(32, card)


def test_flushing_less_often_hides_the_host_sum_on_a_fast_gpu():
    # d32 in the 12gb mode on an H100: a micro-step (2,048 tokens) computes in ~0.06 s, but summing 1.88 B
    # streamed gradients into fp32 moves 10 bytes per parameter through host RAM: ~0.54 s per flush.
    def plan_with(flush_every):
        overrides = {"micro_batch": 1, "grad_flush_every": flush_every}
        return make_plan(32, "h100-sxm", memory_mode="12gb", knob_overrides=overrides, mfu=0.4)

    every, sixteen = plan_with(1), plan_with(16)
    micro = every.chosen_time.micro_step_seconds
    per_flush = host_sum_seconds(param_counts(D32).total, 1, HOST_DRAM_GBS * 1e9)
    assert micro < per_flush < 16 * micro  # exposed when flushing every step, hidden under 16 micro-steps
    saved = every.chosen_time.optimizer_step_seconds - sixteen.chosen_time.optimizer_step_seconds
    assert saved == pytest.approx(256 * (per_flush - micro), rel=1e-6)
    # The price is GPU memory: every parameter's bf16 gradient stays on the GPU between flushes.
    extra = sixteen.memory.static.gpu_gradients - every.memory.static.gpu_gradients
    assert extra == 2 * param_counts(D32).total - every.memory.static.gpu_gradients


def test_the_plan_suggests_a_flush_schedule_only_where_the_cpu_sum_shows():
    fast = make_plan(32, "h100-sxm", memory_mode="12gb")
    [note] = [n for n in fast.notes if "grad_flush_every" in n]
    k = int(note.split("`grad_flush_every: ")[1].split("`")[0])
    assert k > 1
    tuned = make_plan(32, "h100-sxm", memory_mode="12gb", knob_overrides={"grad_flush_every": k})
    assert tuned.chosen_time.optimizer_step_seconds < fast.chosen_time.optimizer_step_seconds
    assert tuned.fits and not any("grad_flush_every" in n for n in tuned.notes)
    # On a 4070 a micro-step outlasts the CPU sum: nothing to suggest.
    assert not any("grad_flush_every" in n for n in make_plan(32, "rtx4070").notes)
