"""The chunked soft-capped cross entropy equals the plain one, in value and in every gradient.

The plain loss is the model's own whole-logits path (`lm_head -> float -> 15 tanh(x / 15) ->
transformers' ForCausalLMLoss`); the chunked one never holds the whole `tokens x vocab` logits
(see docs/memory-and-time.md).
"""

import pytest
import torch
from helpers import randomize_

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM


CONFIG = dict(n_layer=2, n_embd=64, n_head=4, n_kv_head=2, vocab_size=300, sequence_len=32)


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def model_pair(chunk_size):
    torch.manual_seed(0)
    plain = randomize_(NanoChatHFForCausalLM(NanoChatHFConfig(**CONFIG)), scale=0.2).train()
    chunked = NanoChatHFForCausalLM(NanoChatHFConfig(**CONFIG)).train()
    chunked.load_state_dict(plain.state_dict())
    chunked.loss_chunk_size = chunk_size
    return plain, chunked


def loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    output = model(**inputs)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters()}


def targets(ids):
    labels = ids.clone()
    labels[0, :5] = -100  # a masked prompt
    labels[1, 10:13] = -100
    return labels


@pytest.mark.parametrize("chunk_size", [7, 16, 64, 1000])  # uneven, even, whole batch, larger than the batch
@pytest.mark.parametrize("target_kind", ["labels", "shift_labels", "num_items_in_batch"])
def test_chunked_loss_equals_plain_loss_and_gradients(chunk_size, target_kind):
    plain, chunked = model_pair(chunk_size)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(1))
    labels = targets(ids)
    if target_kind == "labels":
        inputs = dict(input_ids=ids, labels=labels)
    elif target_kind == "shift_labels":
        inputs = dict(input_ids=ids, shift_labels=torch.roll(labels, -1, dims=1))
    else:
        # The Trainer's gradient-accumulation normalisation: a sum divided by the tokens of the whole step.
        inputs = dict(input_ids=ids, labels=labels, num_items_in_batch=torch.tensor(123))
    plain_out, plain_grads = loss_and_grads(plain, **inputs)
    chunked_out, chunked_grads = loss_and_grads(chunked, **inputs)

    assert chunked_out.logits is None and plain_out.logits is not None
    torch.testing.assert_close(chunked_out.loss, plain_out.loss, rtol=1e-6, atol=1e-6)
    assert plain_grads.keys() == chunked_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(chunked_grads[name], plain_grads[name], rtol=1e-5, atol=1e-6, msg=name)
    assert plain_grads["lm_head.weight"].abs().sum() > 0


def test_chunking_only_applies_to_training_with_targets():
    plain, chunked = model_pair(8)
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(2))
    assert chunked(ids).logits.shape == (1, 16, CONFIG["vocab_size"])  # no targets: logits as always
    chunked.eval()
    with torch.no_grad():
        evaluated = chunked(ids, labels=ids)  # evaluation keeps its logits
        reference = plain.eval()(ids, labels=ids)
    torch.testing.assert_close(evaluated.logits, reference.logits)
    torch.testing.assert_close(evaluated.loss, reference.loss)


def test_chunked_loss_under_bf16_weights_matches_plain_bf16():
    """The 12gb mode's bf16 weights: chunking changes where the logits live, not their value."""
    plain, chunked = model_pair(5)
    plain.to(torch.bfloat16)
    chunked.to(torch.bfloat16)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(3))
    plain_out, plain_grads = loss_and_grads(plain, input_ids=ids, labels=ids)
    chunked_out, chunked_grads = loss_and_grads(chunked, input_ids=ids, labels=ids)
    torch.testing.assert_close(chunked_out.loss, plain_out.loss, rtol=1e-5, atol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(chunked_grads[name].float(), plain_grads[name].float(), rtol=2e-2, atol=1e-3)


def largest_saved_logits(model, **inputs) -> int:
    """Elements of the largest vocab-wide tensor (logits and their transforms) autograd keeps for backward."""
    sizes = [0]

    def pack(tensor):
        if tensor.ndim and tensor.shape[-1] == CONFIG["vocab_size"]:
            sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**inputs).loss.backward()
    return max(sizes)


def test_whole_logits_are_never_kept_for_backward():
    plain, chunked = model_pair(8)
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 32), generator=torch.Generator().manual_seed(4))
    whole_logits = ids.numel() * CONFIG["vocab_size"]
    assert largest_saved_logits(plain, input_ids=ids, labels=ids) >= whole_logits
    # Chunked: the checkpointed chunks keep only their hidden states and targets; logits are remade in backward.
    assert largest_saved_logits(chunked, input_ids=ids, labels=ids) == 0
