"""`ProcessorChain` / `sampling_warpers`: the chat engine's logits processors applied by one object.

Real transformers warpers and a real tiny NanoChatHFForCausalLM (random weights) are the references.
"""

import pytest
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from nanochat_hf import NanoChatHFForCausalLM
from nanochat_hf.chat.engine import ChatEngine
from nanochat_hf.chat.processor_chain import ProcessorChain, chain_processors, sampling_warpers
from nanochat_hf.errors import UserInputError


class Ban(LogitsProcessor):
    def __init__(self, token):
        self.token = token

    def __call__(self, input_ids, scores):
        scores[:, self.token] = -float("inf")
        return scores


class Shift(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores * 2 + 1


class NeedsStep(LogitsProcessor):
    def __call__(self, input_ids, scores, step):
        return scores


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("chain") / "model", random_weights=True)
    return ChatEngine(NanoChatHFForCausalLM.from_pretrained(folder).eval(), chat_tokenizer())


MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


def test_chain_applies_processors_in_order_like_a_processor_list():
    scores, ids = torch.randn(3, 50), torch.zeros(3, 4, dtype=torch.long)
    processors = [Shift(), Ban(7), Shift()]
    expected = LogitsProcessorList(processors)(ids, scores.clone())
    assert torch.equal(ProcessorChain(processors)(ids, scores.clone()), expected)
    nested = ProcessorChain([ProcessorChain([Shift(), Ban(7)]), LogitsProcessorList([Shift()])])
    assert len(nested.processors) == 3 and torch.equal(nested(ids, scores.clone()), expected)


def test_chain_refuses_a_processor_that_needs_more_than_ids_and_scores():
    with pytest.raises(UserInputError, match="logits_processor: NeedsStep cannot be chained"):
        ProcessorChain([Shift(), NeedsStep()])


def test_engine_refuses_such_a_processor_before_generating(engine):
    with pytest.raises(UserInputError, match="logits_processor: NeedsStep"):
        engine.generate(MESSAGES, max_new_tokens=4, logits_processor=[NeedsStep()])
    with pytest.raises(UserInputError, match="logits_processor: NeedsStep"):
        engine.generate_batch([MESSAGES], max_new_tokens=4, logits_processor=[NeedsStep()])


def test_transformers_own_processors_are_left_in_the_plain_list():
    own, shift = RepetitionPenaltyLogitsProcessor(1.3), Shift()
    assert chain_processors([shift, LogitsProcessorList([own])]) == [shift, own]
    (chain,) = chain_processors([shift])
    assert isinstance(chain, ProcessorChain) and chain.processors == (shift,)
    assert chain_processors([]) == []


@pytest.mark.parametrize(("temperature", "top_k"), [(0.6, 50), (1.3, 5), (0.8, None), (1.0, 3), (1.0, 0)])
def test_sampling_warpers_are_the_ones_generate_builds(temperature, top_k):
    """transformers' own warpers, in generate()'s order, leaving out the ones it leaves out."""
    warpers = sampling_warpers(temperature, top_k)
    expected = ([TemperatureLogitsWarper] if temperature != 1.0 else []) + ([TopKLogitsWarper] if top_k else [])
    assert [type(warper) for warper in warpers] == expected
    if temperature != 1.0:
        assert warpers[0].temperature == temperature
    if top_k:
        assert warpers[-1].top_k == top_k
    ProcessorChain(warpers)  # they can be chained


@pytest.mark.parametrize("top_k", [7, None])
def test_sampled_reply_equals_plain_generate_with_its_warpers(engine, top_k):
    """ChatEngine.generate on its model.generate() path (caller's processor and warpers in one chain) samples
    what model.generate samples with the caller's processor and transformers' own temperature / top-k warpers.
    (A generate() argument that changes nothing, repetition_penalty=1.0, selects that path.)"""
    model, end = engine.model, engine.special["<|assistant_end|>"]
    banned = [end, engine.special["<|bos|>"], engine.special["<|python_start|>"]]
    reply = engine.generate(
        MESSAGES,
        seed=3,
        temperature=0.9,
        top_k=top_k,
        max_new_tokens=24,
        logits_processor=[Ban(banned)],
        repetition_penalty=1.0,
    )
    ids = torch.tensor([engine.prompt_ids(MESSAGES)])
    torch.manual_seed(3)
    plain = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=True,
        temperature=0.9,
        top_k=top_k or 0,
        top_p=1.0,
        max_new_tokens=24,
        eos_token_id=[end],
        pad_token_id=end,
        logits_processor=[Ban(banned)],
    )
    assert reply.token_ids == plain[0, ids.shape[1] :].tolist() and len(reply.token_ids) == 24


def test_reply_is_the_same_streamed_or_not(engine):
    """Without a listener each part is decoded once, at its end: the same parts as when streaming."""
    events = []
    streamed = engine.generate(MESSAGES, seed=5, max_new_tokens=30, on_event=events.append)
    quiet = engine.generate(MESSAGES, seed=5, max_new_tokens=30)
    assert quiet.parts == streamed.parts and quiet.token_ids == streamed.token_ids
    assert "".join(event.text for event in events) == streamed.text
