"""Benchmark inputs made offline: a parquet corpus laid out like nanochat's shards, and a nanochat tokenizer.

The corpus is built from the text that ships with Python (`nanochat_hf.embedded_corpus`): documents are
runs of consecutive embedded documents (shuffled differently on every pass) whose lengths follow a
log-normal law, written as nanochat writes its shards (row groups of 1024 documents, zstd level 3, no
dictionary, no statistics; one string column `text`). The default length law (median 2,400 characters)
makes BOS-aligned best-fit packing at T = 2048 drop about a third of the tokens, as nanochat reports for
FineWeb-EDU. Real shards can be used instead (`--data`). The tokenizer is nanochat's design (split
pattern, 9 special tokens) trained on the embedded corpus with `tokenizers`, or any tokenizer folder /
nanochat `tokenizer.pkl` folder given with `--tokenizer`.

Files are cached under `--workdir` (default: the system temp folder), keyed by their settings.
"""

import math
import os
import random
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import AutoTokenizer

from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.tokenizer import load_nanochat_tokenizer, save_tokenizer_folder, train_tokenizer


ROWS_PER_GROUP = 1024  # nanochat's row-group size
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "nanochat-hf-bench"


def add_corpus_arguments(parser) -> None:
    parser.add_argument("--data", help="folder of parquet shards to read instead of the generated corpus")
    parser.add_argument("--tokenizer", help="tokenizer folder (HF, or nanochat's with tokenizer.pkl) to use")
    parser.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the generated tokenizer")
    parser.add_argument("--shard-mb", type=float, default=60.0, help="characters per generated shard, in millions")
    parser.add_argument("--shards", type=int, default=3, help="generated shards (the last one is validation)")
    parser.add_argument("--median-chars", type=int, default=2400, help="median generated document length")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR), help="cache folder for generated files")


def make_corpus(args) -> Path:
    """The parquet folder to benchmark on: `args.data`, or a generated one (cached)."""
    if args.data:
        return Path(args.data)
    folder = Path(args.workdir) / f"corpus-{args.shards}x{args.shard_mb:g}M-median{args.median_chars}"
    if (folder / "done").is_file():
        return folder
    print(f"writing a {args.shards} x {args.shard_mb:g}M-character corpus to {folder} (once) ...", flush=True)
    pieces = list(iter_embedded_documents())
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    order, cursor = [], 0
    for shard in range(args.shards):
        documents, chars = [], 0
        # nanochat: documents until the shard has enough characters and a multiple of 1024 documents.
        while chars < args.shard_mb * 1e6 or len(documents) % ROWS_PER_GROUP:
            want, parts, length = int(math.exp(rng.gauss(math.log(args.median_chars), 1.0))), [], 0
            while length < want:
                if cursor == len(order):
                    order, cursor = rng.sample(range(len(pieces)), len(pieces)), 0
                parts.append(pieces[order[cursor]])
                length += len(parts[-1]) + 2
                cursor += 1
            document = "\n\n".join(parts)[:want]
            documents.append(document)
            chars += len(document)
        path = folder / f"shard_{shard:05d}.parquet"
        pq.write_table(
            pa.table({"text": documents}),
            path,
            row_group_size=ROWS_PER_GROUP,
            compression="zstd",
            compression_level=3,
            use_dictionary=False,
            write_statistics=False,
        )
        print(f"  {path.name}: {len(documents):,} documents, {chars / 1e6:.0f}M characters", flush=True)
    (folder / "done").write_text("ok\n")
    return folder


def make_tokenizer(args):
    """`args.tokenizer` (HF folder or nanochat's tokenizer.pkl folder) or a generated nanochat tokenizer."""
    if args.tokenizer:
        path = Path(args.tokenizer)
        if (path / "tokenizer.pkl").is_file() and not (path / "tokenizer.json").is_file():
            return load_nanochat_tokenizer(path)[0]
        return AutoTokenizer.from_pretrained(path)
    folder = Path(args.workdir) / f"tokenizer-{args.vocab_size}"
    if not (folder / "tokenizer.json").is_file():
        print(f"training a {args.vocab_size}-token nanochat tokenizer on the embedded corpus (once) ...", flush=True)
        tokenizer = train_tokenizer(iter_embedded_documents(), vocab_size=args.vocab_size, show_progress=False)
        if folder.exists():  # an interrupted earlier attempt
            shutil.rmtree(folder)
        save_tokenizer_folder(tokenizer, folder)
    return AutoTokenizer.from_pretrained(folder)


def parquet_texts(folder: Path, max_chars: float) -> list[str]:
    """Documents from the first shards of `folder`, row group by row group, up to `max_chars` characters."""
    texts, chars = [], 0
    for path in sorted(Path(folder).glob("*.parquet")):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            for text in parquet.read_row_group(group, columns=["text"]).column(0).to_pylist():
                texts.append(text or "")
                chars += len(texts[-1])
                if chars >= max_chars:
                    return texts
    return texts


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
