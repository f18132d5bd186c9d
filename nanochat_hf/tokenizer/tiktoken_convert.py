"""Convert nanochat's saved tokenizer (`tokenizer.pkl`, a pickled tiktoken `Encoding`) to a HF folder.

Reading the pickle safely: a pickle can name any importable callable and call it while loading, so
`pickle.load` on an untrusted file runs arbitrary code. A tiktoken `Encoding` needs very little: it
pickles as "create `tiktoken.core.Encoding` without calling `__init__`, then `__setstate__` it with
{name, pat_str, mergeable_ranks, special_tokens}" (`Encoding.__getstate__`), where the state holds only
str, bytes, int and dict — built by pickle opcodes, no imports. Our unpickler therefore resolves
exactly one global, `tiktoken.core.Encoding`, and resolves it to a stand-in class that merely keeps
the state (so tiktoken need not even be installed); the protocol 0-2 forms additionally need
`copyreg._reconstructor` with `object`, and `_codecs.encode(text, "latin1")` for bytes, which we
replace by a function that does only that. Any other global (`os.system`, `builtins.eval`, ...) is refused
before it is looked up, so nothing from the file runs.
"""

import copyreg
import io
import logging
import pickle
from pathlib import Path

from nanochat_hf.errors import UserInputError
from nanochat_hf.tokenizer.bpe import DEFAULT_MODEL_MAX_LENGTH, tokenizer_from_mergeable_ranks, wrap_tokenizer
from nanochat_hf.tokenizer.folder import save_tokenizer_folder
from nanochat_hf.tokenizer.special_tokens import SPECIAL_TOKENS, SPLIT_PATTERN
from nanochat_hf.tokenizer.token_bytes import TOKEN_BYTES_FILENAME, compute_token_bytes, load_token_bytes


logger = logging.getLogger(__name__)

TOKENIZER_PICKLE_FILENAME = "tokenizer.pkl"


class PickledEncoding:
    """What a pickled `tiktoken.core.Encoding` turns into here: its state, and no behaviour."""

    def __setstate__(self, state):
        self.state = state


def _latin1_bytes(text, encoding):
    """Protocols 0-2 have no bytes opcode and store bytes as `_codecs.encode(text, "latin1")`; only that."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _EncodingOnlyUnpickler(pickle.Unpickler):
    _ALLOWED_GLOBALS = {
        ("tiktoken.core", "Encoding"): PickledEncoding,
        # Protocols 0 and 1 spell "object without __init__" as copyreg._reconstructor(cls, object, None).
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("copy_reg", "_reconstructor"): copyreg._reconstructor,
        ("builtins", "object"): object,
        ("__builtin__", "object"): object,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only a tiktoken Encoding may appear in a tokenizer pickle"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids: not used by a tiktoken Encoding pickle")


def load_tiktoken_encoding_state(path) -> dict:
    """Read a pickled tiktoken `Encoding` without executing anything from the file.

    Returns {"name", "pat_str", "mergeable_ranks", "special_tokens"} after checking their types;
    raises UserInputError naming the file for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (expected nanochat's {TOKENIZER_PICKLE_FILENAME})")
    try:
        loaded = _EncodingOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as err:
        raise UserInputError(f"{path}: not a tiktoken Encoding pickle: {err}") from err
    except Exception as err:  # truncated file, wrong format, bad arguments to the allowed classes, ...
        raise UserInputError(
            f"{path}: could not be read as a tiktoken Encoding pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(loaded, PickledEncoding) or not hasattr(loaded, "state"):
        raise UserInputError(f"{path}: contains a {type(loaded).__name__}, not a tiktoken Encoding")
    state = loaded.state
    if isinstance(state, str):
        raise UserInputError(
            f"{path}: refers to tiktoken's built-in encoding {state!r} by name instead of containing a vocabulary; "
            "only self-contained encodings (like nanochat's) can be converted offline"
        )
    expected = {"name": str, "pat_str": str, "mergeable_ranks": dict, "special_tokens": dict}
    if not isinstance(state, dict) or set(state) != set(expected):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise UserInputError(f"{path}: unexpected tiktoken Encoding state {keys}; expected keys {sorted(expected)}")
    for key, kind in expected.items():
        if not isinstance(state[key], kind):
            raise UserInputError(f"{path}: Encoding field {key!r} should be a {kind.__name__}")
    return state


def _check_nanochat_special_tokens(path, state) -> None:
    special_tokens = state["special_tokens"]
    first_id = len(state["mergeable_ranks"])
    expected = {token: first_id + offset for offset, token in enumerate(SPECIAL_TOKENS)}
    if special_tokens != expected:
        raise UserInputError(
            f"{path}: special tokens {special_tokens} are not nanochat's; expected {expected} "
            "(the 9 chat tokens right after the mergeable tokens, in nanochat's order)"
        )


def _resolve_source(src) -> tuple[Path, Path | None]:
    src = Path(src)
    if src.is_dir():
        pickle_path = src / TOKENIZER_PICKLE_FILENAME
        if not pickle_path.is_file():
            raise UserInputError(f"{src}: folder has no {TOKENIZER_PICKLE_FILENAME} (nanochat's saved tokenizer)")
        token_bytes_path = src / TOKEN_BYTES_FILENAME
        return pickle_path, token_bytes_path if token_bytes_path.is_file() else None
    if src.is_file():
        return src, None
    raise UserInputError(
        f"{src}: no such file or folder (expected nanochat's tokenizer folder or {TOKENIZER_PICKLE_FILENAME})"
    )


def tokenizer_from_tiktoken_pickle(path, model_max_length: int | None = None):
    """Load `tokenizer.pkl` and return the equivalent `PreTrainedTokenizerFast` (ids = tiktoken ranks)."""
    state = load_tiktoken_encoding_state(path)
    _check_nanochat_special_tokens(path, state)
    if state["pat_str"] != SPLIT_PATTERN:
        # Keep the file's pattern: identical ids to the file matter more than the documented default.
        logger.warning("%s: split pattern differs from nanochat's; using the one in the file", path)
    try:
        backend = tokenizer_from_mergeable_ranks(state["mergeable_ranks"], SPECIAL_TOKENS, state["pat_str"])
    except UserInputError as err:
        raise UserInputError(f"{path}: {err}") from err
    return wrap_tokenizer(backend, model_max_length=model_max_length or DEFAULT_MODEL_MAX_LENGTH)


def load_nanochat_tokenizer(src, token_bytes_rule: str = "g1", model_max_length: int | None = None):
    """Read nanochat's tokenizer at `src` and return `(tokenizer, token_bytes)` without writing anything.

    `src` is nanochat's tokenizer folder (holding `tokenizer.pkl` and usually `token_bytes.pt`) or the
    pickle itself. nanochat's own `token_bytes.pt` is used when present (it is what that run's bpb was
    computed with); otherwise the table is computed with `token_bytes_rule` ("g1" for the released d32,
    "raw" for 2026 nanochat). For writing the tokenizer into a folder you are already staging (e.g. next
    to converted model weights): `tokenizer.save_pretrained(folder)` then `save_token_bytes(token_bytes, folder)`.
    """
    pickle_path, token_bytes_path = _resolve_source(src)
    tokenizer = tokenizer_from_tiktoken_pickle(pickle_path, model_max_length=model_max_length)
    if token_bytes_path is not None:
        token_bytes = load_token_bytes(token_bytes_path, vocab_size=len(tokenizer))
    else:
        token_bytes = compute_token_bytes(tokenizer, rule=token_bytes_rule)
    return tokenizer, token_bytes


def convert_tiktoken_tokenizer(src, dst, token_bytes_rule: str = "g1", model_max_length: int | None = None) -> Path:
    """Convert nanochat's tokenizer at `src` (see `load_nanochat_tokenizer`) to a new HF tokenizer folder `dst`.

    `dst` must not exist; it is written atomically and holds `tokenizer.json`, `tokenizer_config.json`,
    `chat_template.jinja` and `token_bytes.pt`.
    """
    dst = Path(dst)
    if dst.exists():
        raise UserInputError(f"output folder {dst} already exists; choose a new path or remove it first")
    tokenizer, token_bytes = load_nanochat_tokenizer(src, token_bytes_rule, model_max_length)
    return save_tokenizer_folder(tokenizer, dst, token_bytes=token_bytes)
