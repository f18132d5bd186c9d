"""Batch encoding for the data lane: the fastest encoder that gives exactly the tokenizer's ids.

nanochat encodes its pretraining text with tiktoken (`encode_ordinary_batch`, 4 threads). Our tokenizers
are `tokenizers` objects built from the same tiktoken-style ranks (`bpe.tokenizer_from_mergeable_ranks`),
so their ids are identical by construction, but `tokenizers` is slower on this vocabulary: measured on the
2-core CPU sandbox, single-threaded, its `encode_batch_fast` runs at about half of tiktoken's speed
(`benchmarks/encode_batch.py`). What limits it is the library's design, not a setting: every
pre-tokenized piece is a `NormalizedString` that tracks per-byte alignments through the split regex
(Oniguruma) and the byte-to-unicode remapping, and the BPE then runs on the remapped characters; tiktoken
splits with fancy-regex and merges raw bytes. No option of `tokenizers` removes those steps.

So `batch_encoder(tokenizer)` returns

- a `TiktokenBatchEncoder` when tiktoken is installed and the tokenizer *is* nanochat's kind of vocabulary:
  a byte-level BPE with nanochat's split pattern whose merge list is exactly the one derived from its ranks
  (checked, not assumed: `tiktoken_encoding_for` reads the tokenizer's JSON and compares), so tiktoken
  gives the same ids for every text; documents are encoded on a persistent thread pool (tiktoken releases
  the GIL) straight into numpy buffers, without building a Python list per document;
- a `TokenizersBatchEncoder` otherwise: the tokenizer's own Rust batch path (`encode_batch_fast`, which
  skips offsets, parallel over all cores unless `TOKENIZERS_PARALLELISM=false`).

Both treat special-token strings inside the text as plain text (nanochat's `encode_ordinary`): only the
BOS id the caller adds marks a document boundary.
"""

import contextlib
import copy
import gc
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from transformers.convert_slow_tokenizer import bytes_to_unicode

from nanochat_hf.errors import UserInputError


logger = logging.getLogger(__name__)

TOKEN_DTYPE = np.int32  # every vocabulary here is far below 2**31 ids
# nanochat encodes with 4 threads; a few more help on larger hosts and cost nothing on small ones.
MAX_ENCODE_THREADS = 8


def default_num_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_ENCODE_THREADS, cores))


def concatenate_documents(arrays, prepend: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Documents' token arrays -> (flat tokens, offsets): document i is `tokens[offsets[i]:offsets[i+1]]`.

    With `prepend`, that id (BOS) starts every document; one numpy concatenation, no per-token Python.
    """
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    if prepend is not None:
        lengths += 1
        bos = np.array([prepend], dtype=TOKEN_DTYPE)
        arrays = [piece for array in arrays for piece in (bos, array)]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(arrays).astype(TOKEN_DTYPE, copy=False) if arrays else np.empty(0, TOKEN_DTYPE)
    return tokens, offsets


class TiktokenBatchEncoder:
    """tiktoken's encoder over a persistent thread pool; ids equal the tokenizer's (see the module docstring)."""

    name = "tiktoken"

    def __init__(self, encoding, num_threads: int | None = None):
        self.encoding = encoding
        self.num_threads = num_threads or default_num_threads()
        self._pool = None

    def _encode_one(self, text: str) -> np.ndarray:
        if not self.encoding.special_tokens_set:
            # tiktoken's special-token scan degenerates without any special token: take the list path.
            return np.array(self.encoding.encode_ordinary(text), dtype=TOKEN_DTYPE)
        # `disallowed_special=()` with no allowed special tokens: special-token strings are plain text,
        # exactly `encode_ordinary`, but written into a buffer numpy can view without a Python list.
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def _map(self, texts: list[str]) -> list[np.ndarray]:
        if self.num_threads == 1 or len(texts) < 2:
            return [self._encode_one(text) for text in texts]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="tiktoken")
        return list(self._pool.map(self._encode_one, texts))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [array.tolist() for array in self._map(texts)]

    def encode_flat(self, texts: list[str], prepend: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return concatenate_documents(self._map(texts), prepend)

    def __getstate__(self):  # a thread pool does not pickle (DataLoader workers, deepcopy)
        return {**self.__dict__, "_pool": None}


class TokenizersBatchEncoder:
    """The fast tokenizer's own Rust batch path, special-token strings taken as text."""

    name = "tokenizers"

    def __init__(self, tokenizer):
        backend = _backend(tokenizer)
        backend = copy.deepcopy(backend)  # the caller's tokenizer keeps its settings
        backend.encode_special_tokens = True
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self._fast = hasattr(backend, "encode_batch_fast")  # tokenizers >= 0.20.2: no offsets tracked

    def _encodings(self, texts: list[str]):
        encode = self.backend.encode_batch_fast if self._fast else self.backend.encode_batch
        return encode(texts, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._encodings(texts)]

    def encode_flat(self, texts: list[str], prepend: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        arrays = [np.asarray(encoding.ids, dtype=TOKEN_DTYPE) for encoding in self._encodings(texts)]
        return concatenate_documents(arrays, prepend)


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "encode_batch"):
        backend = tokenizer  # already a tokenizers.Tokenizer
    if backend is None:
        raise UserInputError(
            f"tokenizer {type(tokenizer).__name__}: need a fast tokenizer (PreTrainedTokenizerFast) for batched encoding"
        )
    return backend


def _nanochat_style_pattern(spec: dict) -> str | None:
    """The split regex when the tokenizer pre-tokenizes as nanochat's does, else None."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if len(steps) != 2:
        return None
    split, byte_level = steps
    if split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert"):
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return None
    return (split.get("pattern") or {}).get("Regex")


@contextlib.contextmanager
def _without_cyclic_gc():
    """Comparing vocabularies allocates ~10 objects per token, none of them in reference cycles. In a process
    that has imported torch and transformers, that burst triggers full collections over millions of live
    objects (measured: 0.4 s of a 0.5 s check at 8,192 tokens); pausing the cycle collector avoids them."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tiktoken_encoding_for(tokenizer):
    """A tiktoken `Encoding` that gives exactly `tokenizer`'s ids for every text, or None (with the reason logged).

    Exact means: no normalizer, nanochat's pre-tokenization (regex split, then bytes), a plain byte-level BPE
    (no dropout, no unknown token, no prefixes) that emits whole pieces first (`ignore_merges`, as tiktoken)
    and whose merge list is the one its ranks imply, and only special added tokens (which both sides then
    encode as text).
    """
    try:
        import tiktoken
    except ImportError:
        logger.info("tiktoken is not installed: encoding with the tokenizer's own batch path")
        return None
    backend = _backend(tokenizer)
    with _without_cyclic_gc():
        return _exact_tiktoken_encoding(tiktoken, backend)


def _exact_tiktoken_encoding(tiktoken, backend):
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    pattern = _nanochat_style_pattern(spec)
    reasons = []
    if spec.get("normalizer") is not None:
        reasons.append("it has a normalizer")
    if pattern is None:
        reasons.append("its pre-tokenizer is not a regex split followed by bytes")
    if model.get("type") != "BPE" or not model.get("ignore_merges"):
        reasons.append("its model is not a BPE that keeps whole pieces (ignore_merges)")
    elif model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        reasons.append("its BPE has dropout or sub-word affixes")
    if any(not token.get("special") for token in spec.get("added_tokens", [])):
        reasons.append("it has non-special added tokens")
    vocab = model.get("vocab") or {}
    spelling = bytes_to_unicode()  # byte -> the printable character tokenizers stores for it (GPT-2's map)
    if not reasons:
        if not set("".join(vocab)) <= set(spelling.values()) or sorted(vocab.values()) != list(range(len(vocab))):
            reasons.append("its vocabulary is not byte-level tokens with ids 0..n-1")
        elif any(vocab.get(char) != byte for byte, char in spelling.items()):
            reasons.append("its ids 0-255 are not the single bytes")
        elif not _merges_follow_ranks(vocab, model.get("merges") or []):
            reasons.append("its merge list is not the one its ranks imply")
    if reasons:
        logger.info("not encoding with tiktoken: the tokenizer %s", "; ".join(reasons))
        return None
    unspell = str.maketrans({char: chr(byte) for byte, char in spelling.items()})
    ranks = {token.translate(unspell).encode("latin-1"): token_id for token, token_id in vocab.items()}
    # The special tokens are registered (with the tokenizer's ids) only so that tiktoken's fast buffer path
    # works; they are never allowed, so their strings inside a text are still encoded as text.
    special_tokens = {token["content"]: token["id"] for token in spec.get("added_tokens", [])}
    try:
        return tiktoken.Encoding(
            name="nanochat_hf", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens
        )
    except Exception as err:  # e.g. a pattern fancy-regex cannot compile
        logger.info("not encoding with tiktoken: %s: %s", type(err).__name__, err)
        return None


def _merges_follow_ranks(vocab: dict[str, int], merges: list) -> bool:
    """Whether `merges` is exactly the list `nanochat_hf.tokenizer.bpe.tokenizer_from_mergeable_ranks` derives from the ranks: token
    by token in id order, every split of the token into two tokens, ordered by (left id, right id).

    Works on the stored spellings (one character per byte), so a split at character i is a split at byte i.
    """
    position, total = 0, len(merges)
    for token in sorted(vocab, key=vocab.__getitem__):
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        if len(splits) > 1:
            splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        if position + len(splits) > total:
            return False
        for left, right in splits:
            merge = merges[position]
            if isinstance(merge, str):  # older tokenizer.json files store "left right"
                merge = merge.split(" ")
            if merge[0] != left or merge[1] != right:
                return False
            position += 1
    return position == total


def batch_encoder(tokenizer, prefer: str = "auto", num_threads: int | None = None):
    """The batch encoder for `tokenizer`: tiktoken when it is exact (and `prefer` allows), else `tokenizers`.

    `prefer`: "auto" (tiktoken when exact), "tiktoken" (error if not possible), "tokenizers".
    """
    if prefer not in ("auto", "tiktoken", "tokenizers"):
        raise UserInputError(f"encoder must be 'auto', 'tiktoken' or 'tokenizers', got {prefer!r}")
    if prefer != "tokenizers":
        encoding = tiktoken_encoding_for(tokenizer)
        if encoding is not None:
            return TiktokenBatchEncoder(encoding, num_threads)
        if prefer == "tiktoken":
            raise UserInputError(
                "encoder 'tiktoken': not available for this tokenizer (tiktoken missing, or the tokenizer is not a "
                "nanochat-style byte-level BPE; the log says which)"
            )
    return TokenizersBatchEncoder(tokenizer)
