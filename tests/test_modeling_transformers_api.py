"""The model as transformers' machinery expects it: attentions, output capturing, tuples, the deprecated
`past_key_values` name, assisted decoding, compile == eager, RoPE scaling and the tensor-parallel plan."""

import re
import warnings

import pytest
import torch
from helpers import randomize_

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM


def tiny_model(generation=1, attn_implementation="sdpa", seed=0, **overrides):
    kwargs = dict(vocab_size=96, sequence_len=64, n_layer=2, n_embd=32, n_head=4, generation=generation)
    if generation == 2:
        kwargs.update(n_embd=64, sequence_len=256)  # gates need 24 channels; S windows are 128 keys
    kwargs.update(overrides)
    config = NanoChatHFConfig(**kwargs, attn_implementation=attn_implementation)
    torch.manual_seed(seed)
    model = NanoChatHFForCausalLM(config).eval()
    randomize_(model)
    return model


def ids(batch=2, length=7, seed=1, high=96):
    return torch.randint(0, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("generation", [1, 2])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_output_attentions_returns_causal_weights_per_layer(generation, implementation):
    model = tiny_model(generation, implementation)
    with torch.no_grad():
        out = model(ids(), output_attentions=True)
        plain = model(ids())
    assert len(out.attentions) == model.config.n_layer
    for weights in out.attentions:
        assert weights.shape == (2, model.config.n_head, 7, 7)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, model.config.n_head, 7))
        assert torch.all(weights.triu(diagonal=1) == 0)  # causal
        assert torch.all(weights[..., torch.ones(7, 7, dtype=torch.bool).tril()] > 0)  # every earlier key
    # Asking for the weights does not change the logits (the sdpa model runs eager for that call).
    torch.testing.assert_close(out.logits, plain.logits, atol=1e-5, rtol=0)
    assert plain.attentions is None


def test_output_attentions_respect_left_padding():
    model = tiny_model(attn_implementation="sdpa")
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        out = model(ids(), attention_mask=mask, output_attentions=True)
    assert torch.all(out.attentions[0][1, :, 3:, :3] == 0)


def test_output_hidden_states_by_index_keeps_only_the_selected():
    model = tiny_model()
    with torch.no_grad():
        everything = model(ids(), output_hidden_states=True).hidden_states
        selected = model(ids(), output_hidden_states=[0, -1]).hidden_states
    assert len(everything) == model.config.n_layer + 1
    assert selected[1] is None
    torch.testing.assert_close(selected[0], everything[0])
    torch.testing.assert_close(selected[-1], everything[-1])


def test_generate_returns_attentions_per_step():
    model = tiny_model(attn_implementation="eager")
    out = model.generate(
        ids(1), max_new_tokens=3, do_sample=False, output_attentions=True, return_dict_in_generate=True
    )
    assert len(out.attentions) == 3
    assert all(len(step) == model.config.n_layer and step[0] is not None for step in out.attentions)
    assert out.attentions[0][0].shape[-1] == 7 and out.attentions[2][0].shape[-1] == 9


@pytest.mark.parametrize("generation", [1, 2])
def test_assisted_decoding_gives_greedy_tokens(generation):
    model = tiny_model(generation, "eager", seed=0)
    assistant = tiny_model(generation, "eager", seed=5)
    prompt = ids(1)
    greedy = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assisted = model.generate(
        prompt,
        assistant_model=assistant,
        max_new_tokens=6,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
    )
    assert torch.equal(assisted.sequences, greedy)
    assert assisted.attentions[0][0] is not None


def test_return_dict_false_returns_a_tuple():
    model = tiny_model()
    with torch.no_grad():
        as_dict = model(ids(), labels=ids())
        as_tuple = model(ids(), labels=ids(), return_dict=False)
        trunk_tuple = model.transformer(ids(), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    assert isinstance(trunk_tuple, tuple)
    model.config.return_dict = False
    with torch.no_grad():
        assert isinstance(model(ids()), tuple)


def test_past_key_values_is_the_deprecated_name_of_cache():
    model = tiny_model()
    prompt = ids(1)
    with torch.no_grad():
        prefix = model(prompt[:, :5], use_cache=True)
        new = model(prompt[:, 5:], cache=prefix.cache, use_cache=True).logits
        prefix = model(prompt[:, :5], use_cache=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = model(prompt[:, 5:], past_key_values=prefix.cache, use_cache=True).logits
    assert any("past_key_values" in str(w.message) and "cache" in str(w.message) for w in caught)
    torch.testing.assert_close(old, new, atol=0, rtol=0)


def test_compiled_logits_equal_eager_with_bfloat16_rotary_tables():
    model = tiny_model(attn_implementation="sdpa")
    assert model.config.rotary_dtype == "bfloat16"
    prompt = ids()
    with torch.no_grad():
        eager = model(prompt).logits
        compiled = torch.compile(model, backend="inductor", fullgraph=True)(prompt).logits
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)


def test_rotary_tables_are_rounded_and_rebuilt_after_loading(tmp_path):
    model = tiny_model()
    rotary = model.transformer.rotary_emb
    assert rotary.cos_table.dtype == torch.bfloat16
    assert rotary.cos_table.shape == (10 * model.config.sequence_len, model.config.head_dim // 2)
    positions = torch.arange(5, dtype=torch.float32)
    inv_freq = 1.0 / (model.config.rope_theta ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    expected = (positions[:, None] * inv_freq).cos().to(torch.bfloat16)
    assert torch.equal(rotary.cos_table[:5], expected)
    model.save_pretrained(tmp_path)
    loaded = NanoChatHFForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.transformer.rotary_emb.cos_table, rotary.cos_table)
    assert torch.equal(loaded.transformer.rotary_emb.sin_table, rotary.sin_table)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids()).logits, model(ids()).logits, atol=0, rtol=0)


def test_default_rope_parameters_leave_the_logits_unchanged():
    plain = tiny_model()
    explicit = tiny_model(rope_parameters={"rope_type": "default"})
    assert plain.config.rope_parameters == {"rope_type": "default", "rope_theta": 10000.0}
    with torch.no_grad():
        torch.testing.assert_close(explicit(ids()).logits, plain(ids()).logits, atol=0, rtol=0)


@pytest.mark.parametrize("rotary_dtype", ["bfloat16", "float32"])
def test_linear_rope_scaling_divides_the_positions(rotary_dtype):
    """Linear scaling by 2 at position 2p gives the unscaled angles of position p."""
    plain = tiny_model(rotary_dtype=rotary_dtype)
    scaled = tiny_model(rotary_dtype=rotary_dtype, rope_parameters={"rope_type": "linear", "factor": 2.0})
    x = torch.zeros(1, 1)
    cos_plain, sin_plain = plain.transformer.rotary_emb(x, torch.arange(4)[None])
    cos_scaled, sin_scaled = scaled.transformer.rotary_emb(x, torch.arange(0, 8, 2)[None])
    torch.testing.assert_close(cos_scaled, cos_plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin_scaled, sin_plain, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert (scaled(ids()).logits - plain(ids()).logits).abs().max() > 1e-4


def test_dynamic_rope_scaling_changes_only_past_the_training_length():
    plain = tiny_model(rotary_dtype="float32")
    dynamic = tiny_model(rotary_dtype="float32", rope_parameters={"rope_type": "dynamic", "factor": 4.0})
    short, long = ids(1, 20), ids(1, 100)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(short).logits, plain(short).logits, atol=1e-6, rtol=0)
        assert (dynamic(long).logits - plain(long).logits).abs().max() > 1e-4


def test_yarn_rope_scaling_uses_transformers_frequencies_and_attention_factor():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = tiny_model(rotary_dtype="float32", rope_parameters={"rope_type": "yarn", "factor": 4.0})
    rotary = model.transformer.rotary_emb
    inv_freq, factor = ROPE_INIT_FUNCTIONS["yarn"](model.config, None)
    assert factor > 1.0 and rotary.attention_scaling == factor
    torch.testing.assert_close(rotary.inv_freq, inv_freq)
    cos, _ = rotary(torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.long))
    torch.testing.assert_close(cos, torch.full_like(cos, factor))  # cos(0) x the attention factor
    with torch.no_grad():
        assert torch.isfinite(model(ids(1, 100)).logits).all()


def test_bad_rope_parameters_name_the_missing_key():
    with pytest.raises((KeyError, ValueError), match="factor"):
        NanoChatHFConfig(rope_parameters={"rope_type": "linear"})


def plan_covers(plan: dict, names: list[str]) -> dict[str, list[str]]:
    """Plan key -> the module names it matches (`*` = one path component, as transformers reads it)."""
    return {key: [n for n in names if re.fullmatch(key.replace(".", r"\.").replace("*", r"\d+"), n)] for key in plan}


def test_tensor_parallel_plan_matches_the_parameter_names():
    model = tiny_model(n_layer=3)
    plan = model.config.base_model_tp_plan
    trunk_linears = [n for n, m in model.transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    matched = plan_covers(plan, trunk_linears)
    assert all(len(names) == 3 for names in matched.values()), matched  # every key, every layer
    assert sorted(n for names in matched.values() for n in names) == sorted(trunk_linears)  # every Linear
    # Row-wise are exactly the output projections; the head gathers its vocabulary shards.
    assert {k for k, v in plan.items() if v == "rowwise"} == {"h.*.attn.c_proj", "h.*.mlp.c_proj"}
    # transformers joins the head's plan and the trunk's (prefixed) into the model's.
    assert model._tp_plan["lm_head"] == "colwise_gather_output"
    assert {f"transformer.{key}": value for key, value in plan.items()}.items() <= model._tp_plan.items()
    assert dict(model.named_modules())["lm_head"] is model.lm_head


def test_generation2_with_value_embeddings_declares_no_plan():
    assert tiny_model(2).config.base_model_tp_plan is None


LOAD_TOKENIZER_WITHOUT_PROMPT = """
import builtins, sys
def no_prompt(*args, **kwargs):
    raise SystemExit("prompted: " + str(args[0] if args else ""))
builtins.input = no_prompt
folder = sys.argv[1]
from transformers import PreTrainedTokenizerFast
print("bare", type(PreTrainedTokenizerFast.from_pretrained(folder)).__name__)
import nanochat_hf
nanochat_hf.register_auto_classes()  # model_type nanochat_hf known: AutoConfig reads config.json without remote code
from transformers import AutoTokenizer
print("auto", type(AutoTokenizer.from_pretrained(folder)).__name__)
"""


def test_the_tokenizer_of_a_saved_folder_loads_without_the_remote_code_prompt(tmp_path):
    """tokenizer_config.json names the stock class (loads without code, no prompt) and our class in auto_map
    (for trust_remote_code=True). The stock class, saved beside a model, keeps auto_map and copies no code:
    the model's own files carry the tokenizer's code, so the folder still loads with trust_remote_code=True."""
    import json
    import os
    import subprocess
    import sys

    from helpers import write_tiny_tokenizer
    from transformers import AutoTokenizer

    write_tiny_tokenizer(tmp_path / "tok", vocab_size=300)
    model = tiny_model(vocab_size=300)
    model.save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tmp_path / "tok").save_pretrained(tmp_path / "model")
    tokenizer_config = json.loads((tmp_path / "model" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "TokenizersBackend"
    module = tokenizer_config["auto_map"]["AutoTokenizer"][0].split(".")[0]
    assert (tmp_path / "model" / f"{module}.py").is_file()
    remote = AutoTokenizer.from_pretrained(tmp_path / "model", trust_remote_code=True)
    assert type(remote).__name__ == "NanoChatHFTokenizer"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_TOKENIZER_WITHOUT_PROMPT, str(tmp_path / "model")],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "custom code" not in done.stdout + done.stderr
    assert "bare TokenizersBackend" in done.stdout or "bare PreTrainedTokenizerFast" in done.stdout
    assert "auto " in done.stdout


def lora_targets(model) -> set[str]:
    return {name for name, module in model.named_modules() if hasattr(module, "lora_A")}


@pytest.mark.parametrize("generation", [1, 2])
def test_lora_all_linear_adapts_the_blocks_and_not_the_head(generation):
    """peft 0.21 has no API to register a default `target_modules` for a model type (its table is a constant
    of known architectures), so `LoraConfig()` alone is refused; `"all-linear"` needs no module names and
    adapts the blocks' Linears (plus generation 2's small gates), never `lm_head`: our recipes' preset
    (`LORA_TARGET_MODULES`) is the same set for generation 1."""
    from peft import LoraConfig, get_peft_model

    from nanochat_hf.defaults import LORA_TARGET_MODULES

    with pytest.raises(ValueError, match="target_modules"):
        get_peft_model(tiny_model(generation), LoraConfig(r=2))
    all_linear = lora_targets(get_peft_model(tiny_model(generation), LoraConfig(r=2, target_modules="all-linear")))
    preset = lora_targets(
        get_peft_model(tiny_model(generation), LoraConfig(r=2, target_modules=list(LORA_TARGET_MODULES)))
    )
    assert not any(name.endswith("lm_head") for name in all_linear)
    assert preset <= all_linear
    gates = {name for name in all_linear - preset}
    assert all(name.endswith(("ve_gate", "smear_gate")) for name in gates)
    assert bool(gates) == (generation == 2)


def test_positions_past_the_rotary_table_are_computed_and_rounded():
    model = tiny_model()
    rotary = model.transformer.rotary_emb
    positions = torch.tensor([[rotary.table_len - 1, rotary.table_len, rotary.table_len + 7]])
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    inv_freq = 1.0 / (model.config.rope_theta ** (torch.arange(0, 8, 2, dtype=torch.float32) / 8))
    angles = positions[0].float()[:, None] * inv_freq
    torch.testing.assert_close(cos[0], angles.cos().to(torch.bfloat16).float(), atol=0, rtol=0)
    torch.testing.assert_close(sin[0], angles.sin().to(torch.bfloat16).float(), atol=0, rtol=0)
