"""Packing, sharding, determinism and resume of the pretraining rows (nanochat_hf.data)."""

import json

import huggingface_hub
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from nanochat_hf.data import (
    PretrainDataset,
    build_pretrain_datasets,
    load_data_state,
    open_text_source,
    save_data_state,
)
from nanochat_hf.errors import UserInputError


SEQ = 16
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def make_documents(count=40):
    # Distinct documents of varied length (some longer than a row, some a few tokens).
    return [
        f"doc{i} " + " ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range((i * 7) % 23 + 1)) for i in range(count)
    ]


@pytest.fixture(scope="module")
def tokenizer():
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|bos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(make_documents(200), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|bos|>")


@pytest.fixture(scope="module")
def docs():
    return make_documents()


@pytest.fixture(scope="module")
def jsonl_file(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("jsonl") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture(scope="module")
def parquet_file(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("parquet") / "shard_00000.parquet"
    pq.write_table(pa.table({"text": docs}), path, row_group_size=3)  # 14 row groups
    return path


def stream_of(tokenizer, documents):
    """nanochat's token stream: BOS + tokens of each document, concatenated."""
    out = []
    for document in documents:
        out += [tokenizer.bos_token_id] + tokenizer(document, add_special_tokens=False)["input_ids"]
    return out


def take(dataset, count):
    iterator = iter(dataset)
    return [next(iterator) for _ in range(count)]


def row_tokens(row):
    """The T + 1 tokens a row covers: its inputs plus the last target."""
    return row["input_ids"].tolist() + [row["shift_labels"][-1].item()]


def as_key(row):
    return tuple(row_tokens(row))


def test_rows_are_the_bos_prefixed_document_stream(tokenizer, docs, jsonl_file):
    dataset = PretrainDataset(jsonl_file, tokenizer, SEQ, num_lanes=1)
    train_docs = docs[:38]  # 5 % of 40 documents (2) are held out for validation
    expected = stream_of(tokenizer, train_docs)
    rows = take(dataset, 2 * len(expected) // (SEQ + 1) + 3)  # past the end of one epoch
    got = [token for row in rows for token in row_tokens(row)]
    # Every token in exactly one row, in order; every document starts with BOS; epochs repeat.
    assert got == (expected * 3)[: len(got)]
    assert expected.count(tokenizer.bos_token_id) == len(train_docs)
    for row in rows:
        assert row["input_ids"].shape == (SEQ,) and row["input_ids"].dtype == torch.long
        assert torch.equal(row["labels"], row["input_ids"])  # HF convention: unshifted
        assert torch.equal(row["shift_labels"][:-1], row["input_ids"][1:])  # targets = next tokens


def test_lanes_split_chunks_without_loss_or_overlap(tokenizer, docs, parquet_file):
    dataset = PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4)
    train_docs = docs[:38]
    per_lane_tokens = {lane: [] for lane in range(4)}
    for j, row in enumerate(take(dataset, 60)):
        per_lane_tokens[j % 4] += row_tokens(row)
    seen_docs = []
    for lane, tokens in per_lane_tokens.items():
        lane_docs = [train_docs[i] for i in range(38) if (i // 3) % 4 == lane]  # row groups of 3, dealt round-robin
        expected = stream_of(tokenizer, lane_docs)
        assert tokens == (expected * 4)[: len(tokens)]
        seen_docs += lane_docs
    assert sorted(seen_docs) == sorted(train_docs)


def test_ranks_read_disjoint_rows_whose_union_is_the_single_process_step(tokenizer, parquet_file):
    rows_per_step = 8  # a multiple of the 4 lanes
    single = take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4), 3 * rows_per_step)
    rank0 = take(
        PretrainDataset(parquet_file, tokenizer, SEQ, rank=0, world_size=2, num_lanes=4), 3 * rows_per_step // 2
    )
    rank1 = take(
        PretrainDataset(parquet_file, tokenizer, SEQ, rank=1, world_size=2, num_lanes=4), 3 * rows_per_step // 2
    )
    assert not {as_key(r) for r in rank0} & {as_key(r) for r in rank1}
    half = rows_per_step // 2
    for step in range(3):
        union = [as_key(r) for r in rank0[step * half : (step + 1) * half] + rank1[step * half : (step + 1) * half]]
        assert sorted(union) == sorted(as_key(r) for r in single[step * rows_per_step : (step + 1) * rows_per_step])


def test_same_seed_same_rows_other_seed_other_order(tokenizer, parquet_file):
    first = [as_key(r) for r in take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=2, seed=3), 30)]
    again = [as_key(r) for r in take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=2, seed=3), 30)]
    other = [as_key(r) for r in take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=2, seed=4), 30)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("prefetch_rows", [0, 8])
def test_resume_at_consumed_rows_ignores_prefetched_rows(tokenizer, parquet_file, tmp_path, prefetch_rows):
    uninterrupted = take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4, seed=1), 40)

    interrupted = PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4, seed=1, prefetch_rows=prefetch_rows)
    take(interrupted, 17)  # the trainer consumed 13; a DataLoader prefetched 4 more
    save_data_state(interrupted, tmp_path, consumed_rows=13)
    assert (tmp_path / "data_state_rank0.json").is_file()

    resumed = PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4, seed=1)
    load_data_state(resumed, tmp_path)
    continued = take(resumed, 27)
    # Token for token: nothing lost, nothing repeated across the save/restore.
    assert [as_key(r) for r in uninterrupted[:13] + continued] == [as_key(r) for r in uninterrupted]
    # A state saved after the resume continues to count from the start of training.
    assert resumed.state_dict(consumed_rows=20)["saved_by"][0]["rows"] == 20


def test_resume_with_another_number_of_processes(tokenizer, parquet_file, tmp_path):
    single = take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4), 24)
    for rank in range(2):
        dataset = PretrainDataset(parquet_file, tokenizer, SEQ, rank=rank, world_size=2, num_lanes=4)
        take(dataset, 8)
        save_data_state(dataset, tmp_path, consumed_rows=6)  # 3 rows from each of the rank's 2 lanes
    resumed = PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4)
    load_data_state(resumed, tmp_path)
    assert [as_key(r) for r in take(resumed, 12)] == [as_key(r) for r in single[12:24]]


def test_state_of_other_settings_is_refused(tokenizer, parquet_file, jsonl_file):
    state = PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=4).state_dict()
    with pytest.raises(UserInputError, match="num_lanes"):
        PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=2).load_state_dict(state)
    with pytest.raises(UserInputError, match="sequence_len"):
        PretrainDataset(parquet_file, tokenizer, SEQ + 1, num_lanes=4).load_state_dict(state)
    with pytest.raises(UserInputError, match="source"):
        PretrainDataset(jsonl_file, tokenizer, SEQ, num_lanes=4).load_state_dict(state)


def test_validation_split_is_held_out_and_restarts(tokenizer, docs, tmp_path):
    for index, part in enumerate((docs[:20], docs[20:30], docs[30:])):
        pq.write_table(pa.table({"text": part}), tmp_path / f"shard_{index:05d}.parquet", row_group_size=4)
    train, validation = build_pretrain_datasets(tmp_path, tokenizer, SEQ, num_lanes=2)
    val_tokens = [t for r in take(validation, 6) for t in row_tokens(r)]
    train_tokens = [t for r in take(train, 6) for t in row_tokens(r)]
    val_stream = stream_of(tokenizer, docs[30:])  # nanochat: the last file is the validation shard
    assert set(val_tokens) <= set(val_stream) and "doc30" in tokenizer.decode(val_tokens)
    assert not any(f"doc{i} " in tokenizer.decode(train_tokens) for i in range(30, 40))
    source = open_text_source(tmp_path)
    assert list(source.iter_documents("validation")) == docs[30:]
    assert list(source.iter_documents("train")) == docs[:30]
    # Rebuilt from its start at every pass.
    assert [as_key(r) for r in take(validation, 6)] == [as_key(r) for r in take(validation, 6)]


def test_text_folder_and_embedded_sources(tokenizer, tmp_path):
    (tmp_path / "a.txt").write_text("first paragraph\nstill first\n\nsecond paragraph\n\nthird\n")
    (tmp_path / "b.txt").write_text("fourth paragraph\n\nfifth\n")
    source = open_text_source(tmp_path)
    assert [source.read_chunk(c) for c in source.split_chunks("train")] == [
        ["first paragraph\nstill first", "second paragraph", "third"]
    ]
    assert source.read_chunk(source.split_chunks("validation")[0]) == ["fourth paragraph", "fifth"]

    train, validation = build_pretrain_datasets("embedded", tokenizer, SEQ)
    row = next(iter(train))
    assert row["input_ids"][0].item() == tokenizer.bos_token_id  # the first row starts the first document
    assert next(iter(validation))["input_ids"].shape == (SEQ,)


def test_bad_sources_fail_before_training(tokenizer, tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        open_text_source(tmp_path / "missing.parquet")
    with pytest.raises(UserInputError, match="no such file"):
        open_text_source("./not/here")
    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "notext.parquet")
    with pytest.raises(UserInputError, match="no 'text' column"):
        PretrainDataset(tmp_path / "notext.parquet", tokenizer, SEQ)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserInputError, match="broken.parquet"):
        open_text_source(tmp_path / "broken.parquet")
    (tmp_path / "records.jsonl").write_text('{"body": "x"}\n{"body": "y"}\n')
    with pytest.raises(UserInputError, match="no 'text' field"):
        open_text_source(tmp_path / "records.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="holds no"):
        open_text_source(tmp_path / "empty")
    (tmp_path / "small.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    with pytest.raises(UserInputError, match="data lane"):
        PretrainDataset(tmp_path / "small.jsonl", tokenizer, SEQ, num_lanes=8)
    with pytest.raises(UserInputError, match="multiple of the number of processes"):
        PretrainDataset(tmp_path / "small.jsonl", tokenizer, SEQ, world_size=2, num_lanes=3)


@pytest.mark.skipif(not huggingface_hub.constants.HF_HUB_OFFLINE, reason="would try the network")
def test_unreachable_hub_dataset_is_a_user_error():
    with pytest.raises(UserInputError, match="Hub dataset could not be reached"):
        open_text_source("karpathy/fineweb-edu-100b-shuffle")


def test_special_token_text_inside_a_document_is_plain_text(tokenizer, tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "a <|bos|> b"}) + "\n" + json.dumps({"text": "c"}) + "\n")
    row = next(iter(PretrainDataset(tmp_path / "c.jsonl", tokenizer, 4, num_lanes=1)))
    tokens = row_tokens(row)
    # Only the document boundary is BOS (nanochat's encode_ordinary), not the literal string in the text.
    assert tokens.count(tokenizer.bos_token_id) == 1


def test_model_loss_counts_every_target_of_a_row(tokenizer, parquet_file):
    from transformers import default_data_collator

    from nanochat_hf import NanoChatHFConfig, NanoChatHFForCausalLM

    torch.manual_seed(0)
    config = NanoChatHFConfig(n_layer=1, n_embd=32, n_head=2, n_kv_head=2, vocab_size=len(tokenizer), sequence_len=SEQ)
    model = NanoChatHFForCausalLM(config)
    batch = default_data_collator(take(PretrainDataset(parquet_file, tokenizer, SEQ, num_lanes=1), 2))
    output = model(**batch)
    direct = torch.nn.functional.cross_entropy(output.logits.flatten(0, 1), batch["shift_labels"].flatten())
    torch.testing.assert_close(output.loss, direct)  # all T targets, as nanochat; not T - 1


def test_generation_2_dataset_is_climbmix_with_its_pinned_validation_shard(tmp_path):
    from nanochat_hf.data import CLIMBMIX_HUB_DATASET, DATASET_BY_GENERATION, DEFAULT_PACKING
    from nanochat_hf.data.sources import ParquetSource, hub_parquet_files

    assert DATASET_BY_GENERATION == {1: "karpathy/fineweb-edu-100b-shuffle", 2: "karpathy/climbmix-400b-shuffle"}
    assert DEFAULT_PACKING == {1: "stream", 2: "best_fit"}
    listed = ["README.md", "shard_06542.parquet", "shard_00000.parquet", "shard_00001.parquet"]
    urls, validation = hub_parquet_files(CLIMBMIX_HUB_DATASET, "abc123", listed)
    assert urls == [f"hf://datasets/karpathy/climbmix-400b-shuffle@abc123/shard_{i:05d}.parquet" for i in (0, 1, 6542)]
    assert validation == 2
    # A partial listing that lacks the pinned shard fails clearly instead of validating on a train shard.
    with pytest.raises(UserInputError, match="shard_06542.parquet"):
        hub_parquet_files(CLIMBMIX_HUB_DATASET, "abc123", ["shard_00000.parquet", "shard_00001.parquet"])
    # Other datasets hold out their last file, as nanochat generation 1.
    assert hub_parquet_files("someone/corpus", "r", ["b.parquet", "a.parquet"])[1] is None

    # The pinned index picks the validation file even when it is not the last one.
    for name in ("shard_00000", "shard_06542", "shard_00001"):
        pq.write_table(pa.table({"text": [f"{name} doc {i}" for i in range(4)]}), tmp_path / f"{name}.parquet")
    files = [str(tmp_path / f"{name}.parquet") for name in ("shard_00000", "shard_06542", "shard_00001")]
    source = ParquetSource("climbmix-like", files, validation_file=1)
    assert list(source.iter_documents("validation")) == [f"shard_06542 doc {i}" for i in range(4)]
    assert "shard_06542" not in " ".join(source.iter_documents("train"))


@pytest.mark.skipif(not huggingface_hub.constants.HF_HUB_OFFLINE, reason="would try the network")
def test_unreachable_climbmix_is_a_user_error():
    with pytest.raises(UserInputError, match="Hub dataset could not be reached"):
        open_text_source("karpathy/climbmix-400b-shuffle")
