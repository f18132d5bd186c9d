"""Generation-2 features, each checked against a small case computed by hand from its definition."""

import math

import pytest
import torch
import torch.nn.functional as F
from nanochat_gen2_reference import randomize_gen2_

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.configuration_nanochat_hf import NANOCHAT_RMS_NORM_EPS


def gen2_model(seed=0, **overrides):
    settings = dict(generation=2, n_layer=4, n_embd=64, n_head=4, n_kv_head=2, vocab_size=200, sequence_len=64)
    model = NanoChatHFForCausalLM(NanoChatHFConfig(**{**settings, **overrides}))
    return randomize_gen2_(model, seed=seed).eval()


def norm(x):
    return F.rms_norm(x, (x.size(-1),), eps=NANOCHAT_RMS_NORM_EPS)


@pytest.mark.parametrize(
    "attn_implementation",
    [
        "sdpa",
        "eager",
        # flex_attention compiles its kernel (minutes on a CPU); flash-attention needs CUDA.
        pytest.param("flex_attention", marks=pytest.mark.gpu),
        pytest.param("flash_attention_2", marks=pytest.mark.gpu),
    ],
)
def test_short_window_sees_exactly_left_plus_one_keys(attn_implementation):
    # sequence_len 512: S layers see 128 earlier keys. Smear off, so token p reaches block 0's output at q
    # only through attention, iff 0 <= q - p <= 128.
    model = gen2_model(sequence_len=512, window_pattern="SL", smear=False)
    if attn_implementation != "sdpa" and attn_implementation != "eager":
        model = model.to("cuda", torch.bfloat16 if attn_implementation == "flash_attention_2" else torch.float32)
    try:
        model.set_attn_implementation(attn_implementation)
    except (ImportError, ValueError) as err:
        pytest.skip(f"{attn_implementation} is not available here: {err}")
    assert model.transformer.h[0].attn.window_left == 128 and model.transformer.h[0].attn.sliding_window == 129
    assert model.transformer.h[1].attn.window_left is None  # the last layer is always long
    ids = torch.randint(0, 200, (1, 140), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1) % 200
    ids, changed = ids.to(model.device), changed.to(model.device)
    with torch.no_grad():
        before = model(ids, output_hidden_states=True).hidden_states[1][0]
        after = model(changed, output_hidden_states=True).hidden_states[1][0]
    moved = ((before - after).abs().amax(-1) > 1e-6).cpu()
    assert moved[5 : 5 + 129].all()  # q - p = 0 .. 128
    assert not moved[5 + 129 :].any() and not moved[:5].any()  # q - p = 129 and beyond, and the past


def test_smear_by_hand_at_position_zero_and_one():
    model = gen2_model(seed=1)
    trunk = model.transformer
    ids = torch.tensor([[7, 11, 13]])
    with torch.no_grad():
        smeared = model(ids, output_hidden_states=True).hidden_states[0][0]
        e = norm(trunk.wte.weight[ids[0]])
        gate = trunk.smear_lambda * torch.sigmoid(e[:, :24] @ trunk.smear_gate.weight.T)  # (3, 1)
    torch.testing.assert_close(smeared[0], e[0], atol=0, rtol=0)  # position 0 is not smeared
    torch.testing.assert_close(smeared[1], e[1] + gate[1] * e[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(smeared[2], e[2] + gate[2] * e[1], atol=1e-6, rtol=0)  # pre-smear e[1]


def test_smear_after_a_cache_uses_the_last_cached_embedding_for_decode_and_chunked_prefill():
    model = gen2_model(seed=2)
    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids, output_hidden_states=True)
        prefix = model(ids[:, :5], use_cache=True, output_hidden_states=True)
        chunk = model(ids[:, 5:9], cache=prefix.cache, use_cache=True, output_hidden_states=True)  # chunked prefill
        step = model(ids[:, 9:10], cache=chunk.cache, use_cache=True, output_hidden_states=True)  # decode
    torch.testing.assert_close(chunk.hidden_states[0], full.hidden_states[0][:, 5:9], atol=1e-6, rtol=0)
    torch.testing.assert_close(step.hidden_states[0], full.hidden_states[0][:, 9:10], atol=1e-6, rtol=0)
    torch.testing.assert_close(chunk.logits, full.logits[:, 5:9], atol=1e-5, rtol=0)
    torch.testing.assert_close(step.logits, full.logits[:, 9:10], atol=1e-5, rtol=0)
    # The first new token of the chunk differs from an unsmeared one: the test would notice a missing smear.
    e5 = norm(model.transformer.wte.weight[ids[:, 5]])
    assert (chunk.hidden_states[0][:, 0] - e5).abs().max() > 1e-3


@pytest.mark.parametrize("n_layer", [3, 4])
def test_backout_subtracts_the_residual_after_block_half_depth(n_layer):
    model = gen2_model(seed=3, n_layer=n_layer)
    captured = {}
    model.transformer.h[-1].register_forward_hook(lambda module, args, output: captured.update(last=output))
    ids = torch.randint(0, 200, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    middle = out.hidden_states[n_layer // 2 + 1]  # hidden_states[i + 1] is the residual after block i
    expected = norm(captured["last"] - model.transformer.backout_lambda * middle)
    torch.testing.assert_close(out.hidden_states[-1], expected, atol=1e-6, rtol=0)


def test_resid_and_x0_lambdas_mix_before_every_block():
    model = gen2_model(seed=4)
    # The block mixes its input first; the attention sees norm(mixture). hidden_states[i] is block i's input
    # before the mixing (the previous block's output; x0 for block 0).
    attention_inputs = []
    for block in model.transformer.h:
        block.attn.register_forward_pre_hook(lambda module, args: attention_inputs.append(args[0]))
    ids = torch.randint(0, 200, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    trunk, x0 = model.transformer, out.hidden_states[0]
    assert len(attention_inputs) == len(trunk.h)
    for i, attention_input in enumerate(attention_inputs):
        previous = out.hidden_states[i]
        expected = norm(trunk.resid_lambdas[i] * previous + trunk.x0_lambdas[i] * x0)
        torch.testing.assert_close(attention_input, expected, atol=1e-5, rtol=0)


def test_value_embedding_enters_v_through_its_gate():
    model = gen2_model(seed=5, n_layer=2)  # value embedding on layer 1 only
    attn = model.transformer.h[1].attn
    captured = {}
    attn.c_v.register_forward_hook(lambda module, args, output: captured.update(x=args[0], v=output))
    original = attn.forward

    def spy(hidden_states, *args, value_embedding=None, **kwargs):
        captured["ve"] = value_embedding
        return original(hidden_states, *args, value_embedding=value_embedding, **kwargs)

    attn.forward = spy
    ids = torch.tensor([[3, 9, 27, 81]])
    with torch.no_grad():
        model(ids)
    torch.testing.assert_close(captured["ve"], model.transformer.value_embeds["1"].weight[ids], atol=0, rtol=0)
    gate = 3 * torch.sigmoid(captured["x"][..., :12] @ attn.ve_gate.weight.T)  # (1, T, kv_heads)
    assert gate.shape == (1, 4, 2) and ((gate > 0) & (gate < 3)).all()


def test_padded_vocab_rows_never_reach_the_logits():
    model = gen2_model(seed=6)  # 200 tokens, 256 rows
    ids = torch.randint(0, 200, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(ids, labels=ids)
        model.lm_head.weight[200:] = 1e4  # padding columns would dominate every softmax
        after = model(ids, labels=ids)
        hidden = model.transformer(ids).last_hidden_state
    assert before.logits.shape == (1, 8, 200)
    torch.testing.assert_close(after.logits, before.logits, atol=0, rtol=0)
    torch.testing.assert_close(after.loss, before.loss, atol=0, rtol=0)
    expected = 15 * torch.tanh((hidden @ model.lm_head.weight[:200].T).float() / 15)
    torch.testing.assert_close(after.logits, expected, atol=1e-5, rtol=0)


def test_generation2_initialisation():
    torch.manual_seed(0)
    config = NanoChatHFConfig(generation=2, n_layer=5, n_embd=256, n_head=4, vocab_size=4000, sequence_len=64)
    model = NanoChatHFForCausalLM(config)
    trunk, s = model.transformer, math.sqrt(3 / 256)
    assert abs(trunk.wte.weight.std().item() - 0.8) < 0.02
    assert abs(model.lm_head.weight.std().item() - 0.001) < 5e-5
    attn, mlp = trunk.h[0].attn, trunk.h[0].mlp
    for weight in (attn.c_q.weight, attn.c_k.weight, attn.c_v.weight, trunk.value_embeds["0"].weight):
        assert weight.abs().max() <= s and weight.abs().max() > 0.95 * s
    assert mlp.c_fc.weight.abs().max() <= 0.4 * s and mlp.c_fc.weight.abs().max() > 0.38 * s
    assert not attn.c_proj.weight.any() and not mlp.c_proj.weight.any()
    for gate in (attn.ve_gate.weight, trunk.smear_gate.weight):
        assert gate.min() >= 0 and gate.max() <= 0.02 and gate.max() > 0
    expected_resid = torch.tensor([1.15 - 0.10 * i / 4 for i in range(5)])
    expected_x0 = torch.tensor([0.20 - 0.15 * i / 4 for i in range(5)])
    torch.testing.assert_close(trunk.resid_lambdas.data, expected_resid, atol=1e-7, rtol=0)
    torch.testing.assert_close(trunk.x0_lambdas.data, expected_x0, atol=1e-7, rtol=0)
    assert trunk.smear_lambda.item() == 0.0 and abs(trunk.backout_lambda.item() - 0.2) < 1e-7
