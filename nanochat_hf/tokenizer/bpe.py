"""Build, wrap and save nanochat's tokenizer as a Hugging Face fast tokenizer.

One representation is shared by training and conversion: tiktoken-style *mergeable ranks*, a map from a
token's raw bytes to its id, where ids 0-255 are the single bytes (id = byte value) and every later id is
a merged token in merge order. That is exactly what nanochat stores in its tiktoken `Encoding`,
so a tokenizer we train can be handed to nanochat and a tokenizer nanochat trained can be
loaded here, with the same ids either way.

From the ranks we build a `tokenizers.Tokenizer` that reproduces tiktoken's encoding:

- pre-tokenization: nanochat's split regex (pieces isolated), then the GPT-2 byte-to-unicode mapping
  (`ByteLevel`, no prefix space, no second regex), so every byte string has a printable spelling;
- model: BPE whose merge list is derived from the ranks (every split of a token into two tokens, ordered
  by the rank of the result), with `ignore_merges=True`: like tiktoken, a piece that is itself a token is
  emitted whole before any merging is tried;
- the 9 special tokens appended after the mergeable tokens, in nanochat's order.
"""

import logging
from collections.abc import Iterable, Mapping

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from nanochat_hf.defaults import SEQUENCE_LEN
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenization_nanochat_hf import NanoChatHFTokenizer
from nanochat_hf.tokenizer.chat import load_chat_template
from nanochat_hf.tokenizer.special_tokens import (
    BOS,
    CHAT_EOS_TOKEN,
    NUM_BYTE_TOKENS,
    PAD_TOKEN,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
)


logger = logging.getLogger(__name__)

DEFAULT_MODEL_MAX_LENGTH = SEQUENCE_LEN  # nanochat's context, in both generations


def byte_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable character map that `tokenizers`' ByteLevel pre-tokenizer applies."""
    return bytes_to_unicode()


def validate_mergeable_ranks(mergeable_ranks: Mapping[bytes, int], where: str = "mergeable_ranks") -> None:
    """Check the invariants a byte-level BPE vocabulary needs; raise UserInputError naming `where`."""
    if not isinstance(mergeable_ranks, Mapping) or not mergeable_ranks:
        raise UserInputError(f"{where}: expected a non-empty dict of token bytes -> rank")
    for token, rank in mergeable_ranks.items():
        if not isinstance(token, bytes) or not token or not isinstance(rank, int) or isinstance(rank, bool):
            raise UserInputError(f"{where}: expected non-empty bytes keys and int ranks, found {token!r}: {rank!r}")
    ranks = sorted(mergeable_ranks.values())
    if ranks != list(range(len(ranks))):
        raise UserInputError(
            f"{where}: ranks must be exactly 0..{len(ranks) - 1} (one per token, no gaps or repeats), so that "
            "token ids can equal ranks"
        )
    missing = [b for b in range(NUM_BYTE_TOKENS) if bytes([b]) not in mergeable_ranks]
    if missing:
        raise UserInputError(
            f"{where}: a byte-level BPE must contain all 256 single bytes; missing {len(missing)} "
            f"(first: {bytes([missing[0]])!r})"
        )


def _merges_from_ranks(mergeable_ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every (left, right) pair of tokens whose concatenation is a token, in the order tiktoken would merge them.

    tiktoken repeatedly merges the adjacent pair whose concatenation has the lowest rank, so a pair's
    priority is the rank of its result. A token can arise from several splits (b"ab"+b"c" and b"a"+b"bc");
    all are listed, because tiktoken would merge any of them.
    """
    merges = []
    for token, rank in mergeable_ranks.items():
        if len(token) < 2:
            continue
        splits = [
            (token[:i], token[i:])
            for i in range(1, len(token))
            if token[:i] in mergeable_ranks and token[i:] in mergeable_ranks
        ]
        splits.sort(key=lambda pair: (mergeable_ranks[pair[0]], mergeable_ranks[pair[1]]))
        merges.extend((rank, left, right) for left, right in splits)
    merges.sort(key=lambda item: item[0])  # stable: keeps the split order within one rank
    return [(left, right) for _, left, right in merges]


def tokenizer_from_mergeable_ranks(
    mergeable_ranks: Mapping[bytes, int],
    special_tokens: Iterable[str] = SPECIAL_TOKENS,
    pattern: str = SPLIT_PATTERN,
) -> Tokenizer:
    """Build a `tokenizers.Tokenizer` that encodes exactly like `tiktoken.Encoding(pat_str=pattern, mergeable_ranks=...)`.

    Token ids equal ranks; the special tokens get ids len(mergeable_ranks), len(mergeable_ranks)+1, ...
    """
    validate_mergeable_ranks(mergeable_ranks)
    byte_encoder = byte_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(byte_encoder[b] for b in token)

    vocab = {spell(token): rank for token, rank in mergeable_ranks.items()}
    merges = [(spell(left), spell(right)) for left, right in _merges_from_ranks(mergeable_ranks)]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    special_tokens = list(special_tokens)
    tokenizer.add_special_tokens(
        [AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False) for token in special_tokens]
    )
    for offset, token in enumerate(special_tokens):
        expected_id = len(mergeable_ranks) + offset
        if tokenizer.token_to_id(token) != expected_id:  # e.g. a special token that is also a mergeable token
            raise UserInputError(f"special token {token!r} could not be given id {expected_id}")
    return tokenizer


def mergeable_ranks_from_tokenizer(tokenizer) -> dict[bytes, int]:
    """The inverse of `tokenizer_from_mergeable_ranks`: {token bytes: id} for every non-added token.

    Accepts a `tokenizers.Tokenizer` or a transformers fast tokenizer built by this package. Use it to
    export a tokenizer we trained to tiktoken / nanochat.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    byte_decoder = {char: byte for byte, char in byte_to_unicode().items()}
    vocab = backend.get_vocab(with_added_tokens=False)
    return {bytes(byte_decoder[char] for char in spelled): token_id for spelled, token_id in vocab.items()}


def token_raw_bytes(tokenizer) -> list[bytes | None]:
    """Raw bytes of every token id (None for added/special tokens), indexed by id."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    table: list[bytes | None] = [None] * backend.get_vocab_size(with_added_tokens=True)
    for token, token_id in mergeable_ranks_from_tokenizer(backend).items():
        table[token_id] = token
    return table


def wrap_tokenizer(backend: Tokenizer, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH, add_bos_token: bool = True):
    """Wrap a backend tokenizer as a `NanoChatHFTokenizer` with nanochat's chat template and token roles.

    `NanoChatHFTokenizer` is the stock fast tokenizer whose `apply_chat_template` keeps message text ordinary
    by default (see its module); saved folders name the stock class too, so they load without remote code.

    `add_bos_token=True` makes `tokenizer(text)` return `[<|bos|>, ...]`, as nanochat prepends BOS to every
    document and prompt; pass `add_special_tokens=False` for the bare ids. Chat rendering
    (`apply_chat_template`) never adds it twice: the template writes `<|bos|>` itself and transformers
    tokenizes the rendered chat with `add_special_tokens=False`.
    """
    named = {BOS, CHAT_EOS_TOKEN, PAD_TOKEN}
    tokenizer = NanoChatHFTokenizer(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=CHAT_EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[token for token in SPECIAL_TOKENS if token not in named],
        model_max_length=model_max_length,
        add_bos_token=add_bos_token,
        clean_up_tokenization_spaces=False,  # decode must give back exactly the bytes encoded
    )
    tokenizer.chat_template = load_chat_template()
    return tokenizer
