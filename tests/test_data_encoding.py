"""The data lane's batch encoders (nanochat_hf.data.encoding): tiktoken only where its ids are exactly
the tokenizer's, the Rust batch path otherwise, the same ids and flat layout from both."""

import json
import random

import numpy as np
import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from nanochat_hf.data.encoding import (
    TiktokenBatchEncoder,
    TokenizersBatchEncoder,
    batch_encoder,
    tiktoken_encoding_for,
)
from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer import SPECIAL_TOKENS


tiktoken = pytest.importorskip("tiktoken")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def varied_texts(count=400, seed=0):
    rng = random.Random(seed)
    words = " ".join(iter_embedded_documents(max_docs=30)).split(" ")
    pieces = [
        lambda: rng.choice(words),
        lambda: " " * rng.randint(1, 30),
        lambda: "".join(rng.choice(" \t\n\r\xa0\u3000") for _ in range(rng.randint(1, 8))),
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 12))),
        lambda: "".join(rng.choice("!?.,;:-_=+*/\\|<>()[]{}'\"`~@#$%^&") for _ in range(rng.randint(1, 9))),
        lambda: rng.choice(["'s", "'LL", "'ve", "n't", "’s"]),
        lambda: rng.choice(["中文文本", "日本語", "Ünïcödé", "Привет", "مرحبا", "😀👍🏽", "e\u0301"]),
        lambda: "".join(chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])) for _ in range(3)),
        lambda: rng.choice(SPECIAL_TOKENS),  # special-token strings inside text stay text
    ]
    texts = ["", " ", "\n\n\n", "<|bos|>", "a<|assistant_end|>b"]
    texts += ["".join(rng.choice(pieces)() for _ in range(rng.randint(1, 40))) for _ in range(count)]
    return texts


def test_nanochat_tokenizer_gets_tiktoken_with_identical_ids(tokenizer):
    encoder = batch_encoder(tokenizer)
    assert isinstance(encoder, TiktokenBatchEncoder)
    texts = varied_texts() + list(iter_embedded_documents(max_docs=200))
    expected = [tokenizer.encode(t, add_special_tokens=False, split_special_tokens=True) for t in texts]
    assert encoder.encode_batch(texts) == expected
    assert TokenizersBatchEncoder(tokenizer).encode_batch(texts) == expected


@pytest.mark.parametrize("kind", ["tiktoken", "tokenizers"])
def test_flat_layout_puts_bos_before_every_document(tokenizer, kind):
    encoder = batch_encoder(tokenizer, prefer=kind)
    assert encoder.name == kind
    texts = ["hello world", "", "a <|bos|> b", "x" * 50]
    tokens, offsets = encoder.encode_flat(texts, prepend=tokenizer.bos_token_id)
    assert tokens.dtype == np.int32 and offsets[0] == 0 and offsets[-1] == len(tokens)
    for i, text in enumerate(texts):
        document = tokens[offsets[i] : offsets[i + 1]].tolist()
        assert document == [tokenizer.bos_token_id] + tokenizer.encode(
            text, add_special_tokens=False, split_special_tokens=True
        )
    empty_tokens, empty_offsets = encoder.encode_flat([], prepend=tokenizer.bos_token_id)
    assert len(empty_tokens) == 0 and empty_offsets.tolist() == [0]


def _with_spec(tokenizer, edit):
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    edit(spec)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), bos_token="<|bos|>")


def test_tokenizers_that_tiktoken_would_encode_differently_keep_their_own_path(tokenizer):
    def swap_two_merges(spec):
        merges = spec["model"]["merges"]
        merges[10], merges[11] = merges[11], merges[10]

    def other_pattern(spec):
        spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"

    def with_normalizer(spec):
        spec["normalizer"] = {"type": "Lowercase"}

    def without_ignore_merges(spec):
        spec["model"]["ignore_merges"] = False

    for edit in (swap_two_merges, with_normalizer, without_ignore_merges):
        assert tiktoken_encoding_for(_with_spec(tokenizer, edit)) is None, edit.__name__
        assert isinstance(batch_encoder(_with_spec(tokenizer, edit)), TokenizersBatchEncoder)
    # Another split pattern is fine when the merges follow the ranks: tiktoken then uses that pattern.
    other = _with_spec(tokenizer, other_pattern)
    encoding = tiktoken_encoding_for(other)
    texts = varied_texts(100, seed=1)
    assert encoding is not None
    assert [encoding.encode_ordinary(t) for t in texts] == [
        other.encode(t, add_special_tokens=False, split_special_tokens=True) for t in texts
    ]


def test_gpt2_style_byte_level_tokenizer_is_not_taken_for_nanochats(tmp_path):
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>"], show_progress=False)
    backend.train_from_iterator(list(iter_embedded_documents(max_docs=50)), trainer)
    gpt2_style = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>")
    assert isinstance(batch_encoder(gpt2_style), TokenizersBatchEncoder)
    with pytest.raises(UserInputError, match="encoder 'tiktoken'"):
        batch_encoder(gpt2_style, prefer="tiktoken")
    with pytest.raises(UserInputError, match="encoder must be"):
        batch_encoder(gpt2_style, prefer="fastest")


def test_data_lane_rows_are_the_same_with_either_encoder(tokenizer):
    from nanochat_hf.data import PretrainDataset

    def rows(encoder, packing):
        dataset = PretrainDataset("embedded", tokenizer, 32, num_lanes=2, encoder=encoder, packing=packing)
        assert dataset.encoder_name == encoder
        iterator = iter(dataset)
        return [next(iterator)["input_ids"].tolist() for _ in range(40)]

    for packing in ("stream", "best_fit"):
        assert rows("tiktoken", packing) == rows("tokenizers", packing)
