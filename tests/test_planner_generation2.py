"""The planner for generation 2 (nanochat 2026): horizon, automatic batch, memory mode, time, and the GPT-2 page."""

import pytest

from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim.scaling_gen2 import Gen2Settings, plan_gen2_depth
from nanochat_hf.planning.choice import not_fit_message
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpt2_report import GPT2_PAGE_PATH, render_gpt2_page
from nanochat_hf.planning.gpus import GIB
from nanochat_hf.planning.horizon import gen2_horizon
from nanochat_hf.planning.plan import make_plan


# nanochat 2026's base_train arithmetic, ratio 12 (d24 also at the speedrun's 8): batch, updates, tokens.
NANOCHAT_GEN2 = {
    (12, 12): (524_288, 2_520, 1_321_205_760),
    (20, 12): (1_048_576, 4_980, 5_221_908_480),
    (24, 12): (1_048_576, 8_352, 8_757_706_752),
    (24, 8): (1_048_576, 5_568, 5_838_471_168),
    (26, 12): (1_048_576, 10_510, 11_020_533_760),
    (32, 12): (2_097_152, 9_600, 20_132_659_200),
}


@pytest.mark.parametrize("depth, ratio", sorted(NANOCHAT_GEN2))
def test_the_horizon_and_automatic_batch_are_nanochats(depth, ratio):
    horizon = gen2_horizon(ModelShape.from_depth(depth, generation=2), target_param_data_ratio=ratio)
    assert (horizon.total_batch_size, horizon.steps, horizon.tokens) == NANOCHAT_GEN2[depth, ratio]
    # The optimizer's plan (what a run trains with) agrees with the planner's.
    plan = plan_gen2_depth(depth, Gen2Settings(target_param_data_ratio=ratio))
    assert (plan.total_batch_size, plan.num_iterations) == (horizon.total_batch_size, horizon.steps)
    assert plan.scaling_params == horizon.scaling_params


def test_gpt2_on_a_4070_trains_in_the_12gb_mode():
    plan = make_plan(24, "rtx4070", generation=2, target_param_data_ratio=8)
    assert plan.horizon.total_flops == pytest.approx(2.788e19, rel=1e-3)
    assert plan.params.total == 1_384_122_122 and plan.params.value_embeds == 603_979_776
    # full and 24gb need more than the card's 12 GiB; 12gb (tables in CPU RAM + checkpointing) fits.
    assert plan.memory.mode == "12gb" and plan.fits and plan.memory.micro_batch == 2
    assert not plan.modes["full"].fits and not plan.modes["24gb"].fits
    assert plan.memory.total / GIB == pytest.approx(11.66, abs=0.01)
    assert plan.memory.static.cpu_total / GIB == pytest.approx(10.21, abs=0.01) and plan.memory.system_ram_gib == 32
    days = {t.mfu: t.days for t in plan.times}
    assert days[0.4] == pytest.approx(19.1, abs=0.1)  # the recomputation of checkpointing included
    assert any("auto -> '12gb'" in note for note in plan.notes)
    assert any("stay in CPU RAM" in note for note in plan.notes)
    assert make_plan(24, "h100-sxm", generation=2, target_param_data_ratio=8).memory.mode == "full"


def test_gpt2_on_a_4090_fits_full_with_little_spare_and_24gb_with_a_larger_micro_batch():
    auto = make_plan(24, "rtx4090", generation=2, target_param_data_ratio=8)
    assert auto.memory.mode == "full" and auto.memory.micro_batch == 1
    assert (auto.memory.capacity - auto.memory.total) / GIB == pytest.approx(0.57, abs=0.01)
    plan = make_plan(24, "rtx4090", generation=2, target_param_data_ratio=8, memory_mode="24gb")
    assert plan.fits and plan.memory.micro_batch == 4
    assert "the less offloading mode 'full' also fits this GPU" in plan.notes


@pytest.mark.parametrize("depth", [26, 32])
def test_deeper_models_do_not_fit_a_4070_even_in_12gb_and_say_so_with_numbers(depth):
    plan = make_plan(depth, "rtx4070", generation=2, target_param_data_ratio=8, memory_mode="12gb")
    assert not plan.fits
    message = not_fit_message(plan)
    assert f"memory mode '12gb' does not fit d{depth} on NVIDIA GeForce RTX 4070" in message
    assert "gathered embedding rows" in message and "the card has 12.00 GiB" in message
    assert "the deepest model that fits is d24 (memory mode '12gb')" in plan.suggestion


def test_modes_generation2_does_not_have_are_refused():
    with pytest.raises(UserInputError, match="memory mode '8gb' is not available for generation 2"):
        make_plan(24, "rtx4070", generation=2, memory_mode="8gb")
    with pytest.raises(UserInputError, match="target_param_data_ratio"):
        make_plan(24, "rtx4070", generation=2, target_tokens=1e9)
    with pytest.raises(UserInputError, match="0 updates"):
        make_plan(24, "rtx4070", generation=2, target_param_data_ratio=1e-6)


def test_cli_plans_the_speedrun(capsys):
    argv = ["plan", "--generation", "2", "--depth", "24", "--target-param-data-ratio", "8"]
    assert cli_main([*argv, "--gpu", "h100-sxm"]) == 0
    out = capsys.readouterr().out
    assert "5,568 steps x 1,048,576 tokens = 5,838,471,168 tokens (ratio 8 x scaling parameters" in out
    assert "603,979,776 value embeddings" in out
    assert cli_main([*argv, "--gpu", "rtx4070"]) == 0
    out = capsys.readouterr().out
    assert "Memory mode '12gb' (auto)" in out and "gathered embedding rows (+ grads)" in out
    assert "CPU RAM: wte + value embeddings fp32 2.44 + fp32 gradient sums 2.44 + AdamW moments 4.88" in out
    assert cli_main([*argv, "--gpu", "rtx4090", "--memory-mode", "24gb"]) == 0
    assert "Memory mode '24gb':" in capsys.readouterr().out
    assert cli_main([*argv, "--gpu", "rtx4070-laptop"]) == 1  # 8 GiB: no generation-2 mode fits d24
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_committed_gpt2_page_is_fresh():
    assert GPT2_PAGE_PATH.read_text(encoding="utf-8") == render_gpt2_page(), (
        "docs/time_to_gpt2.md is stale: run `python -m nanochat_hf.planning.report --readme`"
    )
    page = render_gpt2_page()
    assert "| RTX 4070 | 12 GiB | 15.5 / 19.1 / 25.2 |" in page and "1.65 h on 8 x H100" in page
    assert "| `12gb` (11.7 GiB, 2) | 32 GiB |" in page
