"""Generation 2 against nanochat's own model (nanochat/gpt.py at the mirror's newest commit), float32 on CPU.

Random non-trivial weights (every lambda, gate, smear and backout away from its init); a multi-head and a
grouped-query case, both with a padded vocabulary (200 -> 256 rows) and sequences longer than the short
window. Skipped where nanochat's source is not available (the per-feature tests run everywhere).
"""

import pytest
import torch
from nanochat_gen2_reference import nanochat_gpt, randomize_gen2_, to_hf_state_dict

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM


SEQUENCE_LEN = 256  # short window: ceil(256 / 4 / 128) * 128 = 128 earlier keys
CASES = {
    "mha": dict(n_layer=4, n_head=4, n_kv_head=4, window_pattern="SSSL"),
    "gqa": dict(n_layer=5, n_head=4, n_kv_head=2, window_pattern="SL"),
}


def build_pair(case: str, seed: int = 0):
    gpt = nanochat_gpt()
    if gpt is None:
        pytest.skip("nanochat's source (the local mirror) is not available")
    shape = CASES[case]
    reference_config = gpt.GPTConfig(sequence_len=SEQUENCE_LEN, vocab_size=200, n_embd=64, **shape)
    torch.manual_seed(seed)
    reference = gpt.GPT(reference_config)
    reference.init_weights()
    randomize_gen2_(reference, seed=seed)
    reference.eval()
    config = NanoChatHFConfig(generation=2, sequence_len=SEQUENCE_LEN, vocab_size=200, n_embd=64, **shape)
    ours = NanoChatHFForCausalLM(config)
    missing, unexpected = ours.load_state_dict(to_hf_state_dict(reference.state_dict()), strict=True)
    assert not missing and not unexpected
    return reference, ours.eval()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_logits_match_nanochat(case, attn_implementation):
    reference, ours = build_pair(case)
    ours.config._attn_implementation = attn_implementation
    assert ours.lm_head.weight.shape[0] == 256 and ours.config.vocab_size == 200
    ids = torch.randint(0, 200, (2, 180), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids)
        got = ours(ids).logits
    assert got.shape == expected.shape == (2, 180, 200)
    assert expected.std() > 0.5  # non-trivial logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cached_greedy_decoding_matches_nanochat_past_the_short_window(case):
    reference, ours = build_pair(case, seed=2)
    prompt = torch.randint(0, 200, (1, 100), generator=torch.Generator().manual_seed(3))
    steps = 129 + 40 - 100  # to 40 tokens past the 129 keys an S layer sees
    expected = list(reference.generate(prompt[0].tolist(), max_tokens=steps, temperature=0.0))
    with torch.no_grad():
        generated = ours.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps, do_sample=False, pad_token_id=0
        )
    assert generated[0, 100:].tolist() == expected
