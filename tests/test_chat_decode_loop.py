"""The chat engine's decoding loop (nanochat_hf.chat.decode_loop): its buffered KV cache, and that the engine's
replies through it are the ones transformers' `generate()` gives.

Oracles: transformers' `DynamicCache` / `DynamicLayer` and `model.generate()` over real tiny models (generation 1,
and generation 2 with smear, sliding windows and value embeddings), random weights.
"""

import pytest
import torch
from chat_helpers import chat_tokenizer, save_tiny_model
from nanochat_gen2_reference import randomize_gen2_
from transformers import DynamicCache, DynamicLayer, LogitsProcessor

from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM
from nanochat_hf.chat.decode_loop import BufferedLayer, buffered_cache, decode, runs_in_decode_loop
from nanochat_hf.chat.engine import ChatEngine
from nanochat_hf.errors import UserInputError


pytestmark = pytest.mark.usefixtures("one_cpu_thread")

GEN2 = dict(generation=2, n_layer=4, n_embd=64, n_head=4, n_kv_head=2, vocab_size=200, sequence_len=512)


def gen2_model(seed=0):
    return randomize_gen2_(NanoChatHFForCausalLM(NanoChatHFConfig(**GEN2)), seed=seed).eval()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = save_tiny_model(tmp_path_factory.mktemp("decode") / "model", random_weights=True)
    return ChatEngine(NanoChatHFForCausalLM.from_pretrained(folder).eval(), chat_tokenizer())


def special(engine, name):
    return engine.special[f"<|{name}|>"]


class Scripted(LogitsProcessor):
    """Forces the i-th sampled token to script[i]; after the script, leaves the scores alone."""

    def __init__(self, script):
        self.script, self.step = list(script), 0

    def __call__(self, input_ids, scores):
        if self.step < len(self.script):
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.script[self.step]] = 0.0
        self.step += 1
        return scores


# ---- the buffered cache layer


def test_buffered_cache_gives_the_logits_of_transformers_dynamic_cache_past_the_window():
    """Prefill, single steps and a multi-token chunk (generation 2: smear's extra layer, 128-key windows)."""
    model = gen2_model()
    ids = torch.randint(1, 200, (2, 190), generator=torch.Generator().manual_seed(0))
    pieces = [(0, 100), (100, 101), (101, 102), (102, 140), *[(t, t + 1) for t in range(140, 190)]]
    buffered, dynamic = buffered_cache(model.config, capacity=190), DynamicCache(config=model.config)
    with torch.no_grad():
        for start, end in pieces:
            ours = model(ids[:, start:end], cache=buffered, use_cache=True).logits
            reference = model(ids[:, start:end], cache=dynamic, use_cache=True).logits
            torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert len(buffered.layers) == model.config.n_layer + 1  # one per block + smear's previous embedding
    assert buffered.get_seq_length() == 190 and all(isinstance(layer, BufferedLayer) for layer in buffered.layers)


def test_buffered_layer_batch_operations_match_dynamic_layer():
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    ours, reference = BufferedLayer(capacity=8), DynamicLayer()
    for layer in (ours, reference):
        layer.update(keys, values)
        layer.batch_repeat_interleave(2)
        layer.batch_select_indices(torch.tensor([0, 3, 5]))
        layer.crop(-2)
    assert ours.get_seq_length() == reference.get_seq_length() == 3
    assert torch.equal(ours.keys, reference.keys) and torch.equal(ours.values, reference.values)
    step = torch.randn(3, 2, 1, 4)
    assert torch.equal(ours.update(step, step)[0], reference.update(step, step)[0])  # writes after the crop


def test_buffered_layer_refuses_to_overflow_its_capacity():
    layer = BufferedLayer(capacity=4)
    layer.update(torch.randn(1, 1, 3, 2), torch.randn(1, 1, 3, 2))
    with pytest.raises(ValueError, match="5 positions do not fit its capacity of 4"):
        layer.update(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2))


# ---- the loop


def test_decode_of_left_padded_prompts_equals_generate_on_each_prompt_alone():
    """Generation 2, greedy: rows of different lengths share one loop (mask and positions built by it)."""
    model = gen2_model(seed=1)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 200, (length,), generator=generator).tolist() for length in (5, 17, 11)]
    steps = 20

    def observe(tokens):
        return False

    tokens = decode(model, prompts, 0, steps, lambda ids, scores: scores.argmax(-1), observe)
    assert tokens.shape == (3, 17 + steps)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            alone = model.generate(
                torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, pad_token_id=0, eos_token_id=None
            )
        assert tokens[row, 17:].tolist() == alone[0, len(prompt) :].tolist()


def test_rows_sharing_a_prompt_are_prefilled_once_and_decode_like_separate_rows():
    model = gen2_model(seed=2)
    prompt = torch.randint(1, 200, (9,), generator=torch.Generator().manual_seed(2)).tolist()
    calls = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        shared = decode(model, [prompt] * 3, 0, 6, lambda ids, scores: scores.argmax(-1), lambda tokens: False)
    finally:
        handle.remove()
    assert calls[0] == (1, 9) and all(shape == (3, 1) for shape in calls[1:])
    single = decode(model, [prompt], 0, 6, lambda ids, scores: scores.argmax(-1), lambda tokens: False)
    assert all(row == single[0].tolist() for row in shared.tolist())


# ---- the engine on the loop, against generate()


def tool_call_script(engine):
    """A logits processor scripting "So <python>6*7</python>" (then free text), and one banning the turn's end."""
    script = [
        *engine.encode_text("So "),
        special(engine, "python_start"),
        *engine.encode_text("6*7"),
        special(engine, "python_end"),
    ]
    banned = [special(engine, "assistant_end"), special(engine, "bos")]

    class Ban(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, banned] = -float("inf")
            return scores

    return [Scripted(script), Ban()]


MESSAGES = [{"role": "user", "content": "What is six times seven?"}]


def test_engine_reply_through_the_loop_equals_the_generate_path_with_a_tool_call(engine):
    """Greedy after a scripted tool call: the loop feeds the tool's output in one forward, as the generate()
    path does, and continues with the same tokens."""
    settings = dict(temperature=0, max_new_tokens=30)
    loop = engine.generate(MESSAGES, logits_processor=tool_call_script(engine), **settings)
    # A generate() argument (here one that changes nothing) sends the engine through model.generate() instead.
    through_generate = engine.generate(
        MESSAGES, logits_processor=tool_call_script(engine), repetition_penalty=1.0, **settings
    )
    assert loop.token_ids == through_generate.token_ids and loop.parts == through_generate.parts
    assert {"type": "python_output", "text": "42"} in loop.parts and len(loop.token_ids) == 30
    assert 0 in loop.sampled_mask  # the forced tool output is part of the reply


def test_a_sampled_reply_equals_generate_batch_of_one_from_the_same_seed(engine):
    """`generate` (what `chat` runs) and `generate_batch` (what `serve` runs) draw the same reply from one seed,
    tool call included; another seed draws another reply."""
    settings = dict(temperature=0.8, top_k=9, max_new_tokens=30)
    alone = engine.generate(MESSAGES, seed=11, logits_processor=tool_call_script(engine), **settings)
    (batched,) = engine.generate_batch([MESSAGES], seed=11, logits_processor=tool_call_script(engine), **settings)
    assert alone.token_ids == batched.token_ids and alone.parts == batched.parts
    assert {"type": "python_output", "text": "42"} in alone.parts and len(alone.token_ids) == 30
    other = engine.generate(MESSAGES, seed=12, logits_processor=tool_call_script(engine), **settings)
    assert other.token_ids != alone.token_ids


def test_a_generation_config_asking_for_more_runs_generate(engine):
    """A repetition penalty in the model's generation config is applied (by generate()), not ignored."""
    model, messages = engine.model, [{"role": "user", "content": "Say something."}]
    config = engine._generation_config(0, None)
    assert runs_in_decode_loop(config)
    plain = engine.generate(messages, temperature=0, max_new_tokens=16)
    model.generation_config.repetition_penalty = 5.0
    try:
        assert not runs_in_decode_loop(engine._generation_config(0, None))
        penalised = engine.generate(messages, temperature=0, max_new_tokens=16)
        ids = torch.tensor([engine.prompt_ids(messages)])
        with torch.no_grad():
            expected = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=16,
                eos_token_id=[special(engine, "assistant_end"), special(engine, "bos"), special(engine, "python_end")],
                pad_token_id=special(engine, "bos"),
            )
    finally:
        model.generation_config.repetition_penalty = 1.0
    assert penalised.token_ids == expected[0, ids.shape[1] :].tolist()[: len(penalised.token_ids)]
    assert penalised.token_ids != plain.token_ids


def test_generate_batch_refuses_generation_arguments_it_cannot_honour(engine):
    with pytest.raises(UserInputError, match="generate_batch: unsupported generation arguments num_beams"):
        engine.generate_batch([[{"role": "user", "content": "hi"}]], num_beams=2)
