import math

import pytest
import torch
import torch.nn.functional as F
from helpers import nanochat_reference_logits, randomize_
from transformers import NanoChatConfig as NativeConfig
from transformers import NanoChatForCausalLM as NativeForCausalLM

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.conversion import config_to_native, state_dict_to_native


# ---------------------------------------------------------------------------------------------------------
# Config: nanochat's sizing rule and parameter counts (nanochat's printouts)


@pytest.mark.parametrize(
    "preset, width, heads, params",
    [
        ("d20", 1280, 10, 560_988_160),
        ("d26", 1664, 13, 1_081_999_360),
        ("d32", 2048, 16, 1_879_048_192),
        # d21 only exists under the width-rounding rule: 1344 -> 1408, 11 heads; 12*d^2*L + 2*V*d.
        ("d21", 1408, 11, 12 * 1408**2 * 21 + 2 * 65536 * 1408),
    ],
)
def test_presets_match_nanochat_shapes_and_parameter_counts(preset, width, heads, params):
    config = NanoChatHFConfig.from_preset(preset)
    assert (config.n_embd, config.n_head, config.n_kv_head, config.head_dim) == (width, heads, heads, 128)
    assert (config.vocab_size, config.sequence_len) == (65536, 2048)
    with torch.device("meta"):
        model = NanoChatHFForCausalLM(config)
    assert model.num_parameters() == params


def test_from_depth_rounds_width_up_to_head_multiple():
    config = NanoChatHFConfig.from_depth(5)  # 320 -> 384, 3 heads
    assert (config.n_layer, config.n_embd, config.n_head) == (5, 384, 3)
    assert config.hidden_size == 384 and config.num_hidden_layers == 5 and config.num_attention_heads == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=100, n_head=3), "divisible by `n_head`"),
        (dict(n_embd=64, n_head=4, n_kv_head=3), "must divide `n_head`"),
        (dict(n_layer=0), "`n_layer` must be a positive integer"),
        (dict(vocab_size=-5), "`vocab_size` must be a positive integer"),
        (dict(rotary_dtype="float16"), "rotary_dtype"),
    ],
)
def test_invalid_shapes_fail_at_config_time(kwargs, message):
    base = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256, sequence_len=64)
    with pytest.raises(ValueError, match=message):
        NanoChatHFConfig(**{**base, **kwargs})
    with pytest.raises(ValueError, match="depth"):
        NanoChatHFConfig.from_depth(0)


# ---------------------------------------------------------------------------------------------------------
# Initialisation (nanochat generation 1's init_weights)


def test_from_scratch_init_follows_nanochat(tiny_config):
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(tiny_config)
    block = model.transformer.h[0]
    assert torch.count_nonzero(model.lm_head.weight) == 0
    assert torch.count_nonzero(block.attn.c_proj.weight) == 0
    assert torch.count_nonzero(block.mlp.c_proj.weight) == 0
    assert model.transformer.wte.weight.std().item() == pytest.approx(1.0, rel=0.05)
    d = tiny_config.n_embd
    assert block.attn.c_q.weight.std().item() == pytest.approx(1 / math.sqrt(d), rel=0.1)
    # GQA: c_k has fan_out = n_kv * hd = 32 < fan_in = 64, so s = 1/sqrt(64) * sqrt(32/64).
    assert block.attn.c_k.weight.std().item() == pytest.approx(1 / math.sqrt(d) * math.sqrt(0.5), rel=0.1)
    # With a zero head every logit is 0, so the first loss is exactly ln(V).
    ids = torch.randint(0, tiny_config.vocab_size, (2, 16))
    loss = model(ids, labels=ids).loss
    assert loss.item() == pytest.approx(math.log(tiny_config.vocab_size), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Faithfulness to nanochat's own math (the reference in tests/helpers.py is written from nanochat's description)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_matches_nanochat_reference_with_bfloat16_rotary(tiny_config, attn_implementation):
    assert tiny_config.rotary_dtype == "bfloat16"
    tiny_config._attn_implementation = attn_implementation
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 24))
    with torch.no_grad():
        ours = model(idx).logits
        reference = nanochat_reference_logits(model.state_dict(), tiny_config, idx)
        exact_tables = NanoChatHFForCausalLM(NanoChatHFConfig(**{**tiny_config.to_dict(), "rotary_dtype": "float32"}))
        exact_tables.load_state_dict(model.state_dict())
        float32_rotary = exact_tables.eval()(idx).logits
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    # The bfloat16 rounding of the tables is visible, so the comparison above is not vacuous.
    assert (float32_rotary - reference).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------
# Parity with transformers' built-in NanoChat (float32 rotary, same epsilon)


@pytest.fixture
def model_pair(tiny_config):
    tiny_config.rotary_dtype = "float32"
    ours = randomize_(NanoChatHFForCausalLM(tiny_config), seed=1).eval()
    native = NativeForCausalLM(config_to_native(tiny_config)).eval()
    native.load_state_dict(state_dict_to_native(ours.state_dict()), strict=True)
    return ours, native


def test_logits_match_builtin_nanochat(model_pair):
    ours, native = model_pair
    idx = torch.randint(0, ours.config.vocab_size, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx).logits, native(idx).logits, atol=1e-4, rtol=0)


def test_greedy_generation_matches_builtin_nanochat(model_pair):
    ours, native = model_pair
    prompt = torch.randint(0, ours.config.vocab_size, (1, 8))
    kwargs = dict(max_new_tokens=32, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, **kwargs), native.generate(prompt, **kwargs))
    assert isinstance(native.config, NativeConfig)


# ---------------------------------------------------------------------------------------------------------
# Hugging Face behaviour: labels, cache, padding, logits_to_keep, attention backends, checkpointing


def test_labels_give_shifted_cross_entropy_ignoring_minus_100(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config))
    idx = torch.randint(0, tiny_config.vocab_size, (2, 12))
    labels = idx.clone()
    labels[0, :5] = -100
    out = model(idx, labels=labels)
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, tiny_config.vocab_size), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, expected)
    # Pre-shifted targets (nanochat's convention) count every position.
    targets = torch.randint(0, tiny_config.vocab_size, (2, 12))
    shifted = model(idx, shift_labels=targets).loss
    torch.testing.assert_close(
        shifted, F.cross_entropy(out.logits.reshape(-1, tiny_config.vocab_size), targets.reshape(-1))
    )


def test_incremental_decoding_with_cache_equals_full_forward(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 20))
    with torch.no_grad():
        full = model(idx, use_cache=False).logits
        out = model(idx[:, :12], use_cache=True)
        steps = [out.logits]
        cache = out.cache
        for t in range(12, 20):
            out = model(idx[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_generate_with_and_without_cache_is_identical(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config), seed=3).eval()
    prompt = torch.randint(0, tiny_config.vocab_size, (2, 6))
    kwargs = dict(max_new_tokens=16, do_sample=False, pad_token_id=0)
    assert torch.equal(
        model.generate(prompt, use_cache=True, **kwargs), model.generate(prompt, use_cache=False, **kwargs)
    )


def test_left_padded_batch_generates_like_single_rows(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config), seed=4).eval()
    short = torch.randint(1, tiny_config.vocab_size, (1, 5))
    long = torch.randint(1, tiny_config.vocab_size, (1, 9))
    pad = 0
    batch = torch.cat([torch.cat([torch.full((1, 4), pad), short], dim=1), long])
    mask = torch.ones_like(batch)
    mask[0, :4] = 0
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=pad)
    batched = model.generate(batch, attention_mask=mask, **kwargs)
    assert torch.equal(batched[0, 4:], model.generate(short, **kwargs)[0])
    assert torch.equal(batched[1], model.generate(long, **kwargs)[0])


def test_logits_to_keep_returns_only_last_positions(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 10))
    with torch.no_grad():
        full = model(idx).logits
        last = model(idx, logits_to_keep=3).logits
    assert last.shape == (2, 3, tiny_config.vocab_size)
    torch.testing.assert_close(last, full[:, -3:])


def test_eager_and_sdpa_attention_agree(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(idx).logits
        model.set_attn_implementation("eager")
        eager = model(idx).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_identical_gradients(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config), scale=0.1).train()
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))

    def gradients():
        model.zero_grad()
        model(idx, labels=idx).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.transformer.gradient_checkpointing
    checkpointed = gradients()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=0, rtol=0, msg=name)


def test_bfloat16_forward_runs_and_keeps_float32_logits(tiny_config):
    model = randomize_(NanoChatHFForCausalLM(tiny_config)).to(torch.bfloat16).eval()
    idx = torch.randint(0, tiny_config.vocab_size, (1, 8))
    with torch.no_grad():
        logits = model(idx).logits
    assert logits.dtype == torch.float32
    assert logits.abs().max() <= tiny_config.softcap
