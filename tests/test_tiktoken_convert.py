"""nanochat's tokenizer.pkl -> HF folder: identical ids to tiktoken, safe unpickling, token_bytes."""

import pickle
import random

import pytest
import torch
from helpers import write_nanochat_tokenizer_dir
from transformers import AutoTokenizer

from nanochat_hf.cli import main as cli_main
from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer import (
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    compute_token_bytes,
    convert_tiktoken_tokenizer,
    load_tiktoken_encoding_state,
    load_token_bytes,
    tokenizer_from_mergeable_ranks,
)


tiktoken = pytest.importorskip("tiktoken")

# Repeated so that the small vocabulary learns merges inside multi-byte characters, i.e. tokens that
# are not valid UTF-8 on their own.
MULTILINGUAL = [
    "中文文本的分词测试。中文很好，文本也很好。",
    "日本語のテキストです。東京と大阪。",
    "Ünïcödé ñandú café résumé naïve déjà vu",
    "emoji 😀😀 👍🏽👍🏽 🎉🎉 👨‍👩‍👧",
    "Привет мир, это тест. Привет!",
    "مرحبا بالعالم",
    "한국어 텍스트 한국어",
]


def training_texts():
    yield from MULTILINGUAL * 40
    yield from iter_embedded_documents()


@pytest.fixture(scope="module")
def nanochat_dir(tmp_path_factory):
    """A folder laid out like nanochat's tokenizer dir: tokenizer.pkl (+ token_bytes.pt), built in the test."""
    folder = tmp_path_factory.mktemp("nanochat_tokenizer")
    encoding = write_nanochat_tokenizer_dir(folder, training_texts(), vocab_size=600)
    return folder, encoding


@pytest.fixture(scope="module")
def converted(nanochat_dir, tmp_path_factory):
    folder, encoding = nanochat_dir
    destination = tmp_path_factory.mktemp("out") / "hf_tokenizer"
    convert_tiktoken_tokenizer(folder / "tokenizer.pkl", destination)
    return AutoTokenizer.from_pretrained(destination), encoding, destination


def random_strings(count: int, seed: int = 0):
    rng = random.Random(seed)
    corpus_words = " ".join(iter_embedded_documents(max_docs=40)).split(" ")
    pieces = [
        lambda: rng.choice(corpus_words),
        lambda: " " * rng.randint(1, 40),  # long whitespace runs
        lambda: "".join(rng.choice(" \t\n\r\x0b\x0c\xa0\u3000\u2028") for _ in range(rng.randint(1, 12))),
        lambda: "\n" * rng.randint(1, 6),
        lambda: "\r\n" * rng.randint(1, 3),
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 12))),  # digit runs (split in pairs)
        lambda: "".join(rng.choice("٠١٢٣٤٥٦٧٨٩²³½") for _ in range(rng.randint(1, 5))),  # non-ASCII digits
        lambda: "".join(rng.choice("!?.,;:-_=+*/\\|<>()[]{}'\"`~@#$%^&") for _ in range(rng.randint(1, 15))),
        lambda: rng.choice(["'s", "'S", "'ll", "'VE", "'re", "'d", "'m", "'t", "n't", "’s"]),
        lambda: rng.choice(MULTILINGUAL)[rng.randint(0, 5) :][: rng.randint(1, 12)],
        lambda: "".join(rng.choice("😀👍🏽🎉👨‍👩‍🧠🇫🇷") for _ in range(rng.randint(1, 6))),  # emoji, ZWJ, flags
        lambda: "e\u0301a\u0308" * rng.randint(1, 3),  # combining marks
        # Any code point from the BMP and beyond, except surrogates (not encodable as UTF-8).
        lambda: "".join(chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])) for _ in range(3)),
        lambda: rng.choice(SPECIAL_TOKENS)[: rng.randint(1, 20)],  # special-token look-alikes, as text
    ]
    for _ in range(count):
        yield "".join(rng.choice(pieces)() for _ in range(rng.randint(1, 12)))


def test_pickle_holds_tokens_that_are_not_valid_utf8_alone(nanochat_dir):
    _, encoding = nanochat_dir

    def valid(token: bytes) -> bool:
        try:
            token.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    multi_byte_invalid = [t for t in encoding._mergeable_ranks if len(t) > 1 and not valid(t)]
    assert multi_byte_invalid, "the test vocabulary should contain merged tokens that are partial UTF-8"


def test_ids_equal_tiktoken_on_many_generated_strings(converted):
    tokenizer, encoding, _ = converted
    for text in random_strings(1500):
        expected = encoding.encode_ordinary(text)
        got = tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        assert got == expected, repr(text)
        assert tokenizer.decode(got) == encoding.decode(expected) == text


def test_ids_equal_tiktoken_on_corpus_documents_and_edge_cases(converted):
    tokenizer, encoding, _ = converted
    texts = list(iter_embedded_documents(max_docs=60)) + [
        "",
        " ",
        " " * 1000,
        "\n" * 50 + "x",
        "a  b   c    d\t\t e",
        "1234567890" * 20,
        "!!!???......,,,,;;;;",
        "line\r\nline\rline\n\n\n  \n",
        "I'm sure they'll've DONE'T it",
        "👨‍👩‍👧‍👦 🏳️‍🌈 e\u0301",
        "\x00\x01\x7f\x80",
    ]
    for text in texts:
        assert tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True) == encoding.encode_ordinary(
            text
        )


def test_special_tokens_have_tiktoken_ids(converted):
    tokenizer, encoding, _ = converted
    vocab_size = encoding.n_vocab
    assert len(tokenizer) == vocab_size
    for offset, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == encoding.encode_single_token(token) == vocab_size - 9 + offset
    text = "<|bos|>hello<|user_start|> hi <|user_end|><|assistant_start|>x<|python_start|>1+1<|python_end|>"
    assert tokenizer.encode(text, add_special_tokens=False) == encoding.encode(text, allowed_special="all")


def test_every_id_decodes_like_tiktoken(converted):
    tokenizer, encoding, _ = converted
    for token_id in range(encoding.n_vocab):
        assert tokenizer.decode([token_id]) == encoding.decode([token_id])


def test_split_pattern_is_nanochats():
    # nanochat's split pattern, exactly (GPT-4's pattern with \p{N}{1,2}).
    spec_text = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    assert SPLIT_PATTERN == spec_text


def test_whole_piece_in_vocab_wins_like_tiktoken():
    # tiktoken emits a piece that is itself a token before trying merges. Here b"abcd" has no split into
    # two tokens, so only that shortcut can produce it; merges alone would give [ab, c, d].
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"ab": 256, b"bc": 257, b"abcd": 258})
    special = {token: 259 + i for i, token in enumerate(SPECIAL_TOKENS)}
    encoding = tiktoken.Encoding(name="handmade", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=special)
    backend = tokenizer_from_mergeable_ranks(ranks)
    for text in ["abcd", "abc", "xabcd abcd", "bcd", "abcdabcd"]:
        assert backend.encode(text).ids == encoding.encode_ordinary(text), text
    assert backend.encode("abcd").ids == [258]


def test_converted_folder_reloads_with_chat_template_bos_and_token_bytes(converted):
    tokenizer, encoding, destination = converted
    assert tokenizer.bos_token == "<|bos|>" and tokenizer.eos_token == "<|assistant_end|>"
    assert tokenizer.chat_template and "{% generation %}" in tokenizer.chat_template.replace(
        "{%- generation -%}", "{% generation %}"
    )
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id  # BOS prepended, as nanochat does
    assert sorted(p.name for p in destination.iterdir()) == [
        "chat_template.jinja",
        "token_bytes.pt",
        "tokenization_nanochat_hf.py",  # the tokenizer's own code, for trust_remote_code=True
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not [p for p in destination.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_token_bytes_g1_rule_matches_nanochat_and_raw_rule_matches_bytes(converted):
    tokenizer, encoding, destination = converted
    g1 = compute_token_bytes(tokenizer, rule="g1")
    raw = compute_token_bytes(tokenizer, rule="raw")
    assert g1.dtype == torch.int32 and g1.shape == (encoding.n_vocab,)
    for token_id in range(encoding.n_vocab):
        if token_id >= encoding.n_vocab - len(SPECIAL_TOKENS):
            assert g1[token_id] == raw[token_id] == 0
            continue
        # nanochat generation 1: len(decode([id]).encode("utf-8")), U+FFFD counting 3 bytes.
        assert g1[token_id] == len(encoding.decode([token_id]).encode("utf-8"))
        assert raw[token_id] == len(encoding.decode_single_token_bytes(token_id))
    assert g1[0x80] == 3 and raw[0x80] == 1  # a lone continuation byte: 3 in G1, 1 raw
    assert torch.equal(load_token_bytes(destination), g1)  # the converter defaults to the G1 rule


def test_token_bytes_pt_from_nanochat_is_copied(nanochat_dir, tmp_path):
    folder, encoding = nanochat_dir
    source = tmp_path / "with_token_bytes"
    source.mkdir()
    (source / "tokenizer.pkl").write_bytes((folder / "tokenizer.pkl").read_bytes())
    marker_table = torch.arange(encoding.n_vocab, dtype=torch.int32) % 7  # distinguishable from any rule
    torch.save(marker_table, source / "token_bytes.pt")
    convert_tiktoken_tokenizer(source, tmp_path / "out")
    assert torch.equal(load_token_bytes(tmp_path / "out"), marker_table)


def test_pickle_protocol_0_also_converts(nanochat_dir, tmp_path):
    _, encoding = nanochat_dir
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(encoding, protocol=0))
    state = load_tiktoken_encoding_state(tmp_path / "tokenizer.pkl")
    assert state["mergeable_ranks"] == encoding._mergeable_ranks


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_anything(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(_RunsShellCommand(marker)))
    with pytest.raises(
        UserInputError, match="refusing to load global 'posix.system'|refusing to load global 'nt.system'"
    ):
        convert_tiktoken_tokenizer(tmp_path, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_malicious_object_inside_an_encoding_state_is_refused(nanochat_dir, tmp_path):
    _, encoding = nanochat_dir
    marker = tmp_path / "pwned"

    class Poisoned:
        def __reduce__(self):
            return (
                tiktoken.core.Encoding,
                (),
                {"name": _RunsShellCommand(marker), "pat_str": "", "mergeable_ranks": {}, "special_tokens": {}},
            )

    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(Poisoned()))
    with pytest.raises(UserInputError, match="refusing to load global"):
        load_tiktoken_encoding_state(tmp_path / "tokenizer.pkl")
    assert not marker.exists()


def test_pickle_that_is_not_an_encoding_fails_clearly(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps({"mergeable_ranks": {b"a": 0}}))
    with pytest.raises(UserInputError, match="contains a dict, not a tiktoken Encoding"):
        load_tiktoken_encoding_state(path)
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(UserInputError, match="tokenizer.pkl"):
        load_tiktoken_encoding_state(path)


def test_encoding_referenced_by_name_fails_clearly(tmp_path):
    # What pickling tiktoken's registered "cl100k_base" produces: the class and just the name as state.
    def short_string(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode()

    data = (
        b"\x80\x04"
        + short_string("tiktoken.core")
        + short_string("Encoding")
        + b"\x93)\x81"
        + short_string("cl100k_base")
        + b"b."
    )
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(data)
    with pytest.raises(UserInputError, match="built-in encoding 'cl100k_base' by name"):
        load_tiktoken_encoding_state(path)


def test_encoding_without_nanochat_special_tokens_is_refused(tmp_path):
    encoding = tiktoken.Encoding(
        name="plain",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks={bytes([b]): b for b in range(256)},
        special_tokens={"<|endoftext|>": 256},
    )
    (tmp_path / "tokenizer.pkl").write_bytes(pickle.dumps(encoding))
    with pytest.raises(UserInputError, match="not nanochat's"):
        convert_tiktoken_tokenizer(tmp_path / "tokenizer.pkl", tmp_path / "out")


def test_existing_destination_and_missing_source_are_refused(nanochat_dir, tmp_path):
    folder, _ = nanochat_dir
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserInputError, match="already exists"):
        convert_tiktoken_tokenizer(folder, tmp_path / "taken")
    with pytest.raises(UserInputError, match="no tokenizer.pkl"):
        convert_tiktoken_tokenizer(tmp_path / "taken", tmp_path / "new")
    with pytest.raises(UserInputError, match="no such file or folder"):
        convert_tiktoken_tokenizer(tmp_path / "missing", tmp_path / "new")


def test_cli_convert_tokenizer(nanochat_dir, tmp_path, capsys):
    folder, encoding = nanochat_dir
    assert cli_main(["convert-tokenizer", str(folder), str(tmp_path / "hf")]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").encode(
        "hi there", add_special_tokens=False
    ) == encoding.encode_ordinary("hi there")
    assert cli_main(["convert-tokenizer", str(folder), str(tmp_path / "hf")]) == 2  # exists: UserInputError
    assert "already exists" in capsys.readouterr().err
