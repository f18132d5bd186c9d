"""Generation 2's BOS-aligned best-fit packing (nanochat_hf.data, packing="best_fit"): rows worked out by hand,
BOS at every row start, whole documents or one crop per row, resume and process-count independence."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_pretrain import as_key, row_tokens, take
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nanochat_hf.data import PretrainDataset, load_data_state, save_data_state
from nanochat_hf.data.lanes import BEST_FIT_FIRST_CAPACITY
from nanochat_hf.errors import UserInputError


WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="module")
def word_tokenizer():
    """One token per word, so a document of n words is n + 1 tokens with its BOS: lengths are known exactly."""
    vocab = {"<|bos|>": 0, **{word: i + 1 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|bos|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>")


def write_jsonl(path, documents):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    return path


def doc_tokens(tokenizer, index, words):
    return [tokenizer.bos_token_id] + [tokenizer.convert_tokens_to_ids(f"w{index}")] * words


def test_rows_follow_best_fit_by_hand(word_tokenizer, tmp_path):
    # Documents d0..d5 of 5, 3, 9, 2, 4, 6 tokens (BOS included); d6 is held out for validation.
    words = [4, 2, 8, 1, 3, 5, 1]
    corpus = write_jsonl(tmp_path / "c.jsonl", [" ".join([f"w{i}"] * n) for i, n in enumerate(words)])
    dataset = PretrainDataset(corpus, word_tokenizer, 7, num_lanes=1, packing="best_fit", buffer_size=3)
    d = {i: doc_tokens(word_tokenizer, i, n) for i, n in enumerate(words)}
    expected = [
        d[0] + d[1],  # buffer {d0, d1, d2}: d0 (5) is the largest that fits 8; then d1 (3) fills the 3 left
        d[4] + d[3] + d[0][:2],  # {d2, d3, d4}: d4; {d2, d3, d5}: d3; {d2, d5, d0'}: nothing fits 2 -> crop d0'
        d[5] + d[1][:2],  # {d2, d5, d1'}: d5 (6); {d2, d1', d2'}: crop the shortest, d1' (3)
        d[3] + d[4] + d[5][:2],  # {d2, d2', d3'}: d3'; then d4'; {d2, d2', d5'}: crop d5'
        d[0] + d[1],  # {d2, d2', d0''}: d0''; {d2, d2', d1''}: d1''
        d[2][:8],  # {d2, d2', d2''}: all 9 > 8; a tie of shortest goes to the oldest, epoch 0's d2
    ]
    rows = [row_tokens(r) for r in take(dataset, len(expected))]
    assert rows == expected


def test_first_rows_use_a_smaller_buffer(word_tokenizer, tmp_path):
    # The first BEST_FIT_FIRST_CAPACITY documents are 4 tokens long; the next one fills a row exactly.
    count = BEST_FIT_FIRST_CAPACITY
    documents = [" ".join([f"w{i % 50}"] * 3) for i in range(count)] + ["w59 " * 7] + ["w58"] * 3
    corpus = write_jsonl(tmp_path / "c.jsonl", documents)
    dataset = PretrainDataset(corpus, word_tokenizer, 7, num_lanes=1, packing="best_fit")
    first, second = (row_tokens(r) for r in take(dataset, 2))
    # Row 0 chooses among the first 32 documents only: two 4-token documents, not the perfect fit.
    assert first == doc_tokens(word_tokenizer, 0, 3) + doc_tokens(word_tokenizer, 1, 3)
    # Row 1 buffers 64 documents, so the 8-token document (the 33rd) is now the best fit.
    assert second == [word_tokenizer.bos_token_id] + [word_tokenizer.convert_tokens_to_ids("w59")] * 7


@pytest.fixture(scope="module")
def parquet_corpus(tmp_path_factory):
    """A corpus with a wide spread of document lengths (many longer than a row), 12 row groups."""
    words = [(i * 7) % 19 + (25 if i % 5 == 0 else 0) for i in range(96)]
    documents = [" ".join(f"w{(i + j) % 60}" for j in range(n)) for i, n in enumerate(words)]
    path = tmp_path_factory.mktemp("bestfit") / "shard_00000.parquet"
    pq.write_table(pa.table({"text": documents}), path, row_group_size=8)
    return path


def split_at_bos(tokens, bos):
    starts = [i for i, t in enumerate(tokens) if t == bos]
    return [tokens[a:b] for a, b in zip(starts, starts[1:] + [len(tokens)], strict=True)]


def test_every_row_is_whole_documents_then_at_most_one_crop(word_tokenizer, parquet_corpus):
    seq = 24
    dataset = PretrainDataset(parquet_corpus, word_tokenizer, seq, num_lanes=2, packing="best_fit", buffer_size=10)
    source_docs = {tuple(ids) for ids in _all_documents(word_tokenizer, dataset)}
    crops = 0
    for row in take(dataset, 80):
        tokens = row_tokens(row)
        assert len(tokens) == seq + 1 and tokens[0] == word_tokenizer.bos_token_id  # no padding, BOS first
        pieces = split_at_bos(tokens, word_tokenizer.bos_token_id)
        for piece in pieces[:-1]:
            assert tuple(piece) in source_docs  # whole documents ...
        last = tuple(pieces[-1])
        if last not in source_docs:  # ... and the last one whole or a crop of a longer document
            assert any(doc[: len(last)] == last and len(doc) > len(last) for doc in source_docs)
            crops += 1
    assert crops > 10  # the corpus forces crops; otherwise this test would check nothing


def _all_documents(tokenizer, dataset):
    texts = dataset.source.iter_documents("train")
    return [[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.mark.parametrize("prefetch_rows", [0, 64])
def test_best_fit_resume_at_consumed_rows_continues_exactly(word_tokenizer, parquet_corpus, tmp_path, prefetch_rows):
    settings = dict(num_lanes=4, packing="best_fit", buffer_size=6, seed=2, prefetch_rows=prefetch_rows)
    uninterrupted = take(PretrainDataset(parquet_corpus, word_tokenizer, 16, **settings), 60)

    interrupted = PretrainDataset(parquet_corpus, word_tokenizer, 16, **settings)
    take(interrupted, 31)  # the trainer consumed 23, 8 more were prefetched
    save_data_state(interrupted, tmp_path, consumed_rows=23)
    saved = json.loads((tmp_path / "data_state_rank0.json").read_text())
    # Between rows a lane's buffer holds its capacity less the document the last pick took.
    assert saved["packing"] == "best_fit" and all(len(lane["buffer"]) == 5 for lane in saved["lanes"].values())

    resumed = PretrainDataset(parquet_corpus, word_tokenizer, 16, **settings)
    load_data_state(resumed, tmp_path)
    continued = take(resumed, 37)  # buffered documents are read back lazily, chunk by chunk
    assert [as_key(r) for r in uninterrupted[:23] + continued] == [as_key(r) for r in uninterrupted]


def test_best_fit_rows_do_not_depend_on_the_number_of_processes(word_tokenizer, parquet_corpus, tmp_path):
    settings = dict(num_lanes=4, packing="best_fit", buffer_size=5)
    rows_per_step = 8
    single = take(PretrainDataset(parquet_corpus, word_tokenizer, 16, **settings), 3 * rows_per_step)
    ranks = [
        take(PretrainDataset(parquet_corpus, word_tokenizer, 16, rank=r, world_size=2, **settings), 12)
        for r in range(2)
    ]
    assert not {as_key(r) for r in ranks[0]} & {as_key(r) for r in ranks[1]}
    half = rows_per_step // 2
    for step in range(3):
        union = [as_key(r) for rank in ranks for r in rank[step * half : (step + 1) * half]]
        assert sorted(union) == sorted(as_key(r) for r in single[step * rows_per_step : (step + 1) * rows_per_step])

    # Saved by 2 processes at a step boundary, resumed by 1.
    for rank in range(2):
        dataset = PretrainDataset(parquet_corpus, word_tokenizer, 16, rank=rank, world_size=2, **settings)
        take(dataset, 6)
        save_data_state(dataset, tmp_path, consumed_rows=4)
    resumed = PretrainDataset(parquet_corpus, word_tokenizer, 16, **settings)
    load_data_state(resumed, tmp_path)
    assert [as_key(r) for r in take(resumed, 16)] == [as_key(r) for r in single[8:24]]


def test_packing_and_buffer_must_match_to_resume(word_tokenizer, parquet_corpus):
    best_fit = PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=2, packing="best_fit", buffer_size=5)
    take(best_fit, 3)
    state = best_fit.state_dict()
    with pytest.raises(UserInputError, match="packing"):
        PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=2).load_state_dict(state)
    with pytest.raises(UserInputError, match="buffer_size"):
        PretrainDataset(
            parquet_corpus, word_tokenizer, 16, num_lanes=2, packing="best_fit", buffer_size=6
        ).load_state_dict(state)
    stream_state = PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=2).state_dict()
    del stream_state["packing"]  # written before best-fit packing existed: a stream state
    PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=2).load_state_dict(stream_state)
    with pytest.raises(UserInputError, match="packing must be one of"):
        PretrainDataset(parquet_corpus, word_tokenizer, 16, packing="greedy")


def test_a_buffered_document_that_changed_is_detected(word_tokenizer, parquet_corpus):
    dataset = PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=1, packing="best_fit", buffer_size=4)
    take(dataset, 2)
    state = dataset.state_dict()
    for entry in state["lanes"]["0"]["buffer"]:
        entry[3] += 1  # lengths the corpus does not have
    resumed = PretrainDataset(parquet_corpus, word_tokenizer, 16, num_lanes=1, packing="best_fit", buffer_size=4)
    resumed.load_state_dict(state)
    with pytest.raises(UserInputError, match="another corpus or tokenizer"):
        take(resumed, 20)
