"""generate() without position ids when no row is padded: the model numbers tokens from its cache itself.

A real tiny NanoChatHFForCausalLM (random weights); the references are generate() given explicit position
ids and a left-padded batch.
"""

import torch
from chat_helpers import tiny_config
from helpers import randomize_

from nanochat_hf import NanoChatHFForCausalLM


def tiny_model():
    torch.manual_seed(0)
    model = NanoChatHFForCausalLM(tiny_config(300))
    randomize_(model, seed=0, scale=0.15)
    return model.eval()


def greedy(model, ids, **kwargs):
    return model.generate(
        input_ids=ids, do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=0, **kwargs
    )


def test_no_position_ids_are_made_for_an_all_ones_mask_only():
    model, ids = tiny_model(), torch.tensor([[5, 6, 7]])
    assert model._prepare_position_ids_for_generation(ids, {"attention_mask": torch.ones_like(ids)}) is None
    padded = model._prepare_position_ids_for_generation(ids, {"attention_mask": torch.tensor([[0, 1, 1]])})
    assert padded.tolist() == [[0, 0, 1]]
    assert model._prepare_position_ids_for_generation(ids, {}).tolist() == [[0, 1, 2]]


def test_greedy_tokens_equal_those_with_explicit_position_ids():
    model = tiny_model()
    ids = torch.randint(1, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    shortcut = greedy(model, ids, attention_mask=mask)
    explicit = greedy(model, ids, attention_mask=mask, position_ids=torch.arange(9).expand(2, -1))
    assert torch.equal(shortcut, explicit)


def test_left_padded_row_still_equals_the_row_alone():
    model = tiny_model()
    row = torch.randint(1, 300, (1, 6), generator=torch.Generator().manual_seed(2))
    other = torch.randint(1, 300, (1, 9), generator=torch.Generator().manual_seed(3))
    batch = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), row], 1), other])
    mask = torch.cat(
        [torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(row)], 1), torch.ones_like(other)]
    )
    together = greedy(model, batch, attention_mask=mask)
    alone = greedy(model, row, attention_mask=torch.ones_like(row))
    assert together[0, 9:].tolist() == alone[0, 6:].tolist()
