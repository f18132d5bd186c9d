"""The planner for generation 2 (nanochat 2026): horizon, automatic batch, memory mode, time, and the GPT-2 page."""

import pytest

from nanochat_hf.cli import main as cli_main
from nanochat_hf.errors import UserInputError
from nanochat_hf.optim.scaling_gen2 import Gen2Settings, plan_gen2_depth
from nanochat_hf.planning.flops import ModelShape
from nanochat_hf.planning.gpt2_report import GPT2_PAGE_PATH, render_gpt2_page
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


def test_gpt2_on_a_4070_is_two_weeks_of_compute_but_does_not_fit_yet():
    plan = make_plan(24, "rtx4070", generation=2, target_param_data_ratio=8)
    assert plan.horizon.total_flops == pytest.approx(2.788e19, rel=1e-3)
    assert plan.params.total == 1_384_122_122 and plan.params.value_embeds == 603_979_776
    days = {t.mfu: t.days for t in plan.times}
    assert days[0.4] == pytest.approx(13.9, abs=0.1)  # ~two weeks at 40 % MFU
    assert plan.memory.mode == "full" and not plan.fits
    assert "Only memory mode(s) full can run this model yet" in plan.suggestion
    assert any("generation 2 is planned in memory mode full only" in note for note in plan.notes)
    assert make_plan(24, "h100-sxm", generation=2, target_param_data_ratio=8).fits


def test_offloading_modes_are_refused_for_generation2():
    with pytest.raises(UserInputError, match="memory mode '12gb' is not available for this model"):
        make_plan(24, "rtx4070", generation=2, memory_mode="12gb")
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
    assert cli_main([*argv, "--gpu", "rtx4070"]) == 1  # planned, but does not fit one 12 GB card yet
    assert "DOES NOT FIT" in capsys.readouterr().out


def test_committed_gpt2_page_is_fresh():
    assert GPT2_PAGE_PATH.read_text(encoding="utf-8") == render_gpt2_page(), (
        "docs/time_to_gpt2.md is stale: run `python -m nanochat_hf.planning.report --readme`"
    )
    page = render_gpt2_page()
    assert "| RTX 4070 | 12 GiB | 11.1 / 13.9 / 18.5 |" in page and "1.65 h on 8 x H100" in page
