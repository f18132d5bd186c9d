"""Training nanochat's tokenizer with HF `tokenizers`: layout, determinism, saving, text sources, recipe."""

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer import (
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    TokenizerTrainingArguments,
    compute_token_bytes,
    load_chat_template,
    load_token_bytes,
    mergeable_ranks_from_tokenizer,
    save_tokenizer_folder,
    train_tokenizer,
    train_tokenizer_from_source,
)
from nanochat_hf.tokenizer.training import capped_texts


REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"vocab_size": 400, "max_chars": 200_000, "show_progress": False}


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(iter_embedded_documents(), **SMALL)


def test_special_tokens_are_the_last_ids_in_nanochat_order(trained):
    assert len(trained) == 400
    assert [trained.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == list(range(400 - 9, 400))
    assert trained.bos_token == "<|bos|>" and trained.bos_token_id == 391
    assert trained.eos_token == "<|assistant_end|>"  # the chat stop token
    assert trained.pad_token == "<|bos|>" and trained.pad_token_id != trained.eos_token_id
    assert trained.model_max_length == 2048
    assert trained.chat_template == load_chat_template()


def test_byte_tokens_are_raw_byte_values_and_merges_follow(trained):
    ranks = mergeable_ranks_from_tokenizer(trained)
    assert all(ranks[bytes([b])] == b for b in range(256))  # ids 0-255 = raw byte values, as in nanochat
    assert sorted(ranks.values()) == list(range(400 - 9))
    assert all(len(token) >= 2 for token, rank in ranks.items() if rank >= 256)


def test_bos_is_prepended_by_default_and_text_never_makes_special_tokens(trained):
    ids = trained("hello <|bos|>")["input_ids"]
    assert ids[0] == trained.bos_token_id
    plain = trained.encode("hello <|bos|>", add_special_tokens=False, split_special_tokens=True)
    assert trained.bos_token_id not in plain and trained.decode(plain) == "hello <|bos|>"


def test_training_on_the_embedded_corpus_is_deterministic(trained):
    again = train_tokenizer(iter_embedded_documents(), **SMALL)
    assert mergeable_ranks_from_tokenizer(again) == mergeable_ranks_from_tokenizer(trained)
    sample = " ".join(iter_embedded_documents(max_docs=20))
    assert again.encode(sample) == trained.encode(sample)


def test_trained_tokenizer_compresses_text(trained):
    text = " ".join(iter_embedded_documents(max_docs=30))
    ids = trained.encode(text, add_special_tokens=False)
    assert len(text.encode("utf-8")) / len(ids) > 1.5  # merges are being used (144 of them)
    assert trained.decode(ids) == text


@pytest.mark.parametrize("vocab_size", [MIN_VOCAB_SIZE - 1, 0, 300.5, "65536"])
def test_vocab_size_below_bytes_plus_specials_is_refused(vocab_size):
    with pytest.raises(UserInputError, match="vocab_size must be an integer >= 265"):
        train_tokenizer(["some text"], vocab_size=vocab_size, show_progress=False)


def test_minimum_vocab_has_only_bytes_and_specials():
    tokenizer = train_tokenizer(["some text here"], vocab_size=MIN_VOCAB_SIZE, show_progress=False)
    assert len(tokenizer) == MIN_VOCAB_SIZE and tokenizer.bos_token_id == 256


def test_too_little_text_warns_and_keeps_specials_last(caplog):
    with caplog.at_level(logging.WARNING, logger="nanochat_hf.tokenizer.training"):
        tokenizer = train_tokenizer(["tiny text, tiny text"], vocab_size=5000, show_progress=False)
    assert "vocabulary size is" in caplog.text
    assert len(tokenizer) < 5000
    assert tokenizer.convert_tokens_to_ids("<|output_end|>") == len(tokenizer) - 1


def test_empty_source_fails_clearly():
    with pytest.raises(UserInputError, match="no training text"):
        train_tokenizer(["", None], vocab_size=300, show_progress=False)


def test_caps_truncate_documents_and_stop_after_crossing_the_total():
    documents = ["a" * 50, "b" * 50, "c" * 50, "d" * 50]
    # nanochat's caps: each document cut to doc_cap; stop once the running total exceeds max_chars,
    # keeping the document that crosses it.
    assert list(capped_texts(documents, max_chars=70, doc_cap=30)) == ["a" * 30, "b" * 30, "c" * 30]
    assert list(capped_texts(documents, max_chars=10_000, doc_cap=10_000)) == documents


def test_saved_folder_reloads_with_autotokenizer(trained, tmp_path):
    destination = tmp_path / "tok"
    save_tokenizer_folder(trained, destination, token_bytes=compute_token_bytes(trained))
    reloaded = AutoTokenizer.from_pretrained(destination)
    sample = "Hello world!\n\n  def f(x): return x**2  # 😀"
    assert reloaded(sample)["input_ids"] == trained(sample)["input_ids"]
    assert reloaded.bos_token == "<|bos|>" and reloaded.chat_template == trained.chat_template
    assert reloaded.eos_token == "<|assistant_end|>" and reloaded.pad_token == "<|bos|>"
    assert reloaded.model_max_length == 2048
    token_bytes = load_token_bytes(destination, vocab_size=len(reloaded))
    assert token_bytes.dtype == torch.int32 and token_bytes[-9:].tolist() == [0] * 9
    assert token_bytes[ord("a")] == 1
    with pytest.raises(UserInputError, match="already exists"):
        save_tokenizer_folder(trained, destination)
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no staging folder left behind


def test_failed_save_leaves_nothing_behind(trained, tmp_path):
    with pytest.raises(TypeError):
        save_tokenizer_folder(trained, tmp_path / "tok", token_bytes=object())
    assert list(tmp_path.iterdir()) == []


# ---- training from a data source ----


def test_training_from_a_source_uses_its_training_split(tmp_path):
    """The tokenizer is trained on the same training split the pretraining data uses (the last file held out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "shards"
    shards.mkdir()
    words = ["alpha beta gamma delta " * 40, "zyxwv qponm lkjih " * 40]
    for shard, text in enumerate(words):
        pq.write_table(pa.table({"text": [text] * 20}), shards / f"shard_{shard:05d}.parquet")
    args = TokenizerTrainingArguments(output_dir=str(tmp_path / "tok"), dataset=str(shards), vocab_size=300)
    tokenizer = train_tokenizer_from_source(args)
    vocab = tokenizer.get_vocab()
    assert any("alpha" in token for token in vocab)
    assert not any("zyxwv" in token for token in vocab)  # the validation shard was not read
    with pytest.raises(UserInputError, match="already exists"):
        train_tokenizer_from_source(args)


# ---- recipe ----


def load_recipe():
    spec = importlib.util.spec_from_file_location(
        "train_tokenizer_recipe", REPO_ROOT / "recipes" / "train_tokenizer.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def test_recipe_trains_and_saves_from_the_quickstart_config(tmp_path, capsys):
    recipe = load_recipe()
    config = REPO_ROOT / "recipes" / "configs" / "tokenizer_quickstart.yaml"
    output = tmp_path / "quick"
    argv = ["--config", str(config), "--vocab_size", "300", "--max_chars", "50000", "--output_dir", str(output)]
    assert recipe.main(argv) == 0
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert len(tokenizer) == 300 and (output / "token_bytes.pt").is_file()
    assert recipe.main(argv) == 2  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err


def test_recipe_configs_are_valid(tmp_path):
    from trl import TrlParser

    def parse(path):
        return TrlParser((TokenizerTrainingArguments,)).parse_args_and_config(["--config", str(path)])[0]

    for config in sorted((REPO_ROOT / "recipes" / "configs").glob("tokenizer_*.yaml")):
        loaded = parse(config)
        assert loaded.vocab_size >= MIN_VOCAB_SIZE and loaded.output_dir
    fineweb = parse(REPO_ROOT / "recipes" / "configs" / "tokenizer_fineweb_65k.yaml")
    # Generation 1's vocabulary, FineWeb-EDU, the speedrun caps.
    assert (fineweb.dataset, fineweb.vocab_size, fineweb.max_chars, fineweb.doc_cap) == (
        "karpathy/fineweb-edu-100b-shuffle",
        65536,
        2_000_000_000,
        10_000,
    )
    (tmp_path / "bad.yaml").write_text("vocab_size: 300\nvocab: 5\noutput_dir: x\n")
    with pytest.raises(ValueError, match="vocab"):
        parse(tmp_path / "bad.yaml")
