"""Bits per byte of any causal LM and tokenizer on any text source: nanochat's tokenizer-independent loss.

bpb = sum of cross-entropy (nats) / (ln 2 x sum of the byte lengths of the target tokens), both sums
over targets that are not special tokens. The text is packed the way pretraining packs it (each document
prefixed with BOS, rows of `sequence_len + 1` tokens, `nanochat_hf.data.PretrainDataset`), so a model's
bpb here equals the `val_bpb` its training logged on the same source; the work is shared over processes.
Sources: a Hub dataset id, local parquet/jsonl/txt files or folders, or `embedded`; the split is
`validation` (nanochat's held-out shard or share) or `train`.

Token byte lengths come from the `token_bytes.pt` saved beside the tokenizer when there is one, else they
are computed (`nanochat_hf.tokenizer.compute_token_bytes`; rule "g1" reproduces nanochat 2025's numbers,
"raw" its 2026 rule).
"""

import math
from pathlib import Path

from ..callbacks.val_bpb import evaluate_bpb
from ..data.pretrain import PretrainDataset
from ..errors import UserInputError
from ..tokenizer import compute_token_bytes, load_token_bytes
from ..tokenizer.token_bytes import TOKEN_BYTES_FILENAME
from .distributed import is_main_process, rank_and_world_size


DEFAULT_SPLIT = "validation"


def find_token_bytes(location, tokenizer, rule: str = "g1"):
    """The saved table in the model/tokenizer folder when present, else computed with `rule`."""
    folder = Path(location)
    if (folder / TOKEN_BYTES_FILENAME).is_file():
        return load_token_bytes(folder, vocab_size=len(tokenizer))
    try:
        return compute_token_bytes(tokenizer, rule=rule)
    except (KeyError, ValueError, AttributeError) as err:
        raise UserInputError(
            f"tokenizer {location}: cannot compute token byte lengths ({err}); bpb needs a byte-level BPE tokenizer "
            "or a token_bytes.pt beside it"
        ) from None


class _Counted:
    """Iterates `dataset`, advancing a progress bar per row."""

    def __init__(self, dataset, bar):
        self.dataset, self.bar = dataset, bar

    def __iter__(self):
        for row in self.dataset:
            self.bar.update(1)
            yield row


def check_split(split: str) -> None:
    if split not in ("train", "validation"):
        raise UserInputError(f"--bpb-split must be 'train' or 'validation', got {split!r}")


def open_bpb_rows(tokenizer, source, split: str, sequence_len: int):
    """This process's rows of `source` (a spec or an opened `TextSource`), packed as in pretraining."""
    check_split(split)
    rank, world_size = rank_and_world_size()
    return PretrainDataset(source, tokenizer, sequence_len, split=split, rank=rank, world_size=world_size)


def evaluate_text_bpb(
    model, rows, token_bytes, tokens: int, batch_size: int = 8, autocast_dtype=None, show_progress=True
):
    """{"bpb", "tokens"}: bits per byte over `tokens` tokens of `rows` (from `open_bpb_rows`)."""
    from tqdm.auto import tqdm

    world_size = rank_and_world_size()[1]
    rows_per_process = max(1, math.ceil(tokens / (rows.sequence_len * world_size)))
    description = f"bpb {rows.source.name} ({rows.split})"
    with tqdm(
        total=rows_per_process, desc=description, unit="row", disable=not (show_progress and is_main_process())
    ) as bar:
        bpb = evaluate_bpb(model, _Counted(rows, bar), token_bytes, tokens, batch_size, autocast_dtype)
    return {
        "bpb": bpb,
        "tokens": rows_per_process * rows.sequence_len * world_size,
        "sequence_len": rows.sequence_len,
        "source": rows.source.name,
        "split": rows.split,
    }
