"""Train nanochat's byte-level BPE tokenizer with Hugging Face `tokenizers`.

nanochat trains with its own Rust BPE and encodes with tiktoken. We train with `tokenizers`' BpeTrainer
on the same pre-tokenization (nanochat's split regex, then bytes), read the learned merges back in
order, and rebuild the tokenizer from tiktoken-style ranks (`bpe.tokenizer_from_mergeable_ranks`): ids
0-255 are the raw bytes, ids 256.. the merged tokens in merge order, then the 9 special tokens at the
end in nanochat's order. The result therefore encodes exactly like a tiktoken `Encoding` built from the
same ranks, i.e. like nanochat would with this vocabulary, and can be exported to it losslessly.

The merges themselves are not bit-identical to rustbpe's (the two trainers break ties between equally
frequent pairs differently), so train-from-scratch results match nanochat in design, not in the exact
vocabulary; use `convert_tiktoken_tokenizer` to reuse a nanochat vocabulary exactly.
"""

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from nanochat_hf.data.sources import open_text_source
from nanochat_hf.defaults import SEQUENCE_LEN, VOCAB_SIZE
from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer.bpe import byte_to_unicode, tokenizer_from_mergeable_ranks, wrap_tokenizer
from nanochat_hf.tokenizer.folder import save_tokenizer_folder
from nanochat_hf.tokenizer.special_tokens import MIN_VOCAB_SIZE, NUM_BYTE_TOKENS, SPECIAL_TOKENS, SPLIT_PATTERN
from nanochat_hf.tokenizer.token_bytes import compute_token_bytes


logger = logging.getLogger(__name__)

# nanochat's caps (scripts/tok_train.py): each document truncated to its first 10,000 characters; training stops
# once the running character count exceeds max_chars (the document that crosses it is still used).
# 2B characters is the G1 speedrun (and G2 default) setting; the G1 script default is 10B.
DEFAULT_VOCAB_SIZE = VOCAB_SIZE
DEFAULT_MAX_CHARS = 2_000_000_000
DEFAULT_DOC_CAP = 10_000


def capped_texts(
    texts: Iterable[str],
    max_chars: int = DEFAULT_MAX_CHARS,
    doc_cap: int = DEFAULT_DOC_CAP,
    show_progress: bool = False,
) -> Iterator[str]:
    """Apply nanochat's caps to a stream of documents (non-string and empty items are skipped)."""
    from tqdm.auto import tqdm

    total = 0
    with tqdm(total=max_chars, unit="char", unit_scale=True, desc="tokenizer text", disable=not show_progress) as bar:
        for text in texts:
            if not isinstance(text, str) or not text:
                continue
            text = text[:doc_cap]
            yield text
            total += len(text)
            bar.update(len(text))
            if total > max_chars:
                return


def _check_vocab_size(vocab_size) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < MIN_VOCAB_SIZE:
        raise UserInputError(
            f"vocab_size must be an integer >= {MIN_VOCAB_SIZE} (256 byte tokens + {len(SPECIAL_TOKENS)} special "
            f"tokens), got {vocab_size!r}"
        )


def _ranks_from_trained_merges(trained) -> dict[bytes, int]:
    """Turn a trained byte-level BPE into tiktoken ranks: bytes -> byte value, merges -> 256.. in merge order."""
    byte_decoder = {char: byte for byte, char in byte_to_unicode().items()}
    merges = json.loads(trained.to_str())["model"]["merges"]
    ranks = {bytes([b]): b for b in range(NUM_BYTE_TOKENS)}
    for merge in merges:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = bytes(byte_decoder[char] for char in left + right)
        if token not in ranks:  # the trainer can reach one token through two different merges
            ranks[token] = len(ranks)
    return ranks


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_chars: int = DEFAULT_MAX_CHARS,
    doc_cap: int = DEFAULT_DOC_CAP,
    model_max_length: int = SEQUENCE_LEN,
    show_progress: bool = True,
):
    """Train nanochat's tokenizer on `texts` and return it as a `PreTrainedTokenizerFast`.

    `vocab_size` counts everything, the 9 special tokens included (ids vocab_size-9 .. vocab_size-1).
    If the text runs out of pairs to merge before reaching it, a warning is logged and the vocabulary is
    smaller (the special tokens still come last); check `len(tokenizer)` before sizing a model.
    The returned tokenizer has `<|bos|>` as BOS, `<|assistant_end|>` as EOS, BOS as padding, nanochat's
    chat template and `model_max_length`. Training is deterministic for a given input.
    """
    _check_vocab_size(vocab_size)
    for name, value in (("max_chars", max_chars), ("doc_cap", doc_cap), ("model_max_length", model_max_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UserInputError(f"{name} must be a positive integer, got {value!r}")

    num_mergeable = vocab_size - len(SPECIAL_TOKENS)
    trainee = Tokenizer(models.BPE())
    trainee.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=num_mergeable,
        min_frequency=0,
        show_progress=show_progress,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        special_tokens=[],  # added after training so that they land at the end of the vocabulary
    )
    documents_seen = 0

    def counted(stream):
        nonlocal documents_seen
        for text in stream:
            documents_seen += 1
            yield text

    text_stream = capped_texts(texts, max_chars=max_chars, doc_cap=doc_cap, show_progress=show_progress)
    trainee.train_from_iterator(counted(text_stream), trainer=trainer)
    if documents_seen == 0:
        raise UserInputError("no training text: the source yielded no non-empty documents")

    ranks = _ranks_from_trained_merges(trainee)
    if len(ranks) < num_mergeable:
        logger.warning(
            "tokenizer training stopped at %d mergeable tokens (asked for %d): the text has too few distinct pairs; "
            "the vocabulary size is %d instead of %d",
            len(ranks),
            num_mergeable,
            len(ranks) + len(SPECIAL_TOKENS),
            vocab_size,
        )
    return wrap_tokenizer(tokenizer_from_mergeable_ranks(ranks), model_max_length=model_max_length)


@dataclass
class TokenizerTrainingArguments:
    """Settings of `recipes/train_tokenizer.py` (YAML keys and `--key value` flags)."""

    output_dir: str = field(metadata={"help": "New folder for the tokenizer (must not exist)."})
    dataset: str = field(
        default="embedded",
        metadata={
            "help": "Hub dataset id, local parquet/jsonl/txt file or folder, or 'embedded'. Its training "
            "split is used (the last file, or the last documents, are held out for validation)."
        },
    )
    vocab_size: int = field(default=DEFAULT_VOCAB_SIZE, metadata={"help": "Tokens, the 9 special ones included."})
    max_chars: int = field(default=DEFAULT_MAX_CHARS, metadata={"help": "Characters of training text in total."})
    doc_cap: int = field(default=DEFAULT_DOC_CAP, metadata={"help": "Characters kept from each document."})
    model_max_length: int = field(default=SEQUENCE_LEN, metadata={"help": "Context length recorded in the tokenizer."})
    token_bytes_rule: str = field(default="g1", metadata={"help": "g1 (the released d32) or raw (2026 nanochat)."})


def train_tokenizer_from_source(args: TokenizerTrainingArguments):
    """Train on `args.dataset` and save tokenizer + token_bytes.pt to `args.output_dir`; returns the tokenizer."""
    if Path(args.output_dir).exists():  # before training, not after
        raise UserInputError(f"output_dir {args.output_dir}: already exists; choose a new path or remove it first")
    source = open_text_source(args.dataset)
    tokenizer = train_tokenizer(
        source.iter_documents("train"),
        vocab_size=args.vocab_size,
        max_chars=args.max_chars,
        doc_cap=args.doc_cap,
        model_max_length=args.model_max_length,
    )
    token_bytes = compute_token_bytes(tokenizer, rule=args.token_bytes_rule)
    save_tokenizer_folder(tokenizer, args.output_dir, token_bytes=token_bytes)
    return tokenizer
