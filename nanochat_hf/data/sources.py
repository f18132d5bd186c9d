"""Where pretraining text comes from: a source spec resolved into numbered chunks of documents.

A *source* is one of

- a Hub dataset id (default `karpathy/fineweb-edu-100b-shuffle`, nanochat generation 1's data): its
  parquet shards, sorted by path, are read straight from the Hub (`hf://` through `huggingface_hub`'s
  fsspec filesystem and pyarrow), a row group at a time;
- local files or folders: `.parquet` (a string column `text`), `.jsonl`/`.json` (a `text` field per
  record) or `.txt` (documents separated by blank lines). Folders are searched recursively; one kind
  of file per source;
- `"embedded"`: the small corpus that ships with Python (`nanochat_hf.embedded_corpus`), for offline
  runs, tests and the quickstart.

Everything is checked when the source is opened, so a missing path, an unreadable file or a parquet
file without a `text` column is a `UserInputError` before any training starts.

A source is presented as an ordered list of *blocks* (a parquet row group; the whole table of a
jsonl/txt/embedded source) and each split as a list of `Chunk`s, contiguous document ranges inside one
block. Chunks are the unit the training loader shards and seeks by: reading chunk `i` gives the same
documents every time, so a position "chunk i, document d" can be resumed by reading one chunk.

Validation split, as nanochat: with several files the **last file** (sorted) is held out (for the Hub
dataset that is the last shard, `shard_01822`); with a single file, or an in-memory source, the last
5 % of the documents (at least one) are held out. The split is deterministic.

Why not `datasets` streaming for parquet: its `IterableDataset.state_dict()` resumes by example
count inside a shard, which we would also have to map to rows actually consumed by the trainer; with
row groups addressed directly the position is four integers (see `pretrain.py`). jsonl and txt files
*are* loaded with `datasets` (a memory-mapped Arrow table, cached by `datasets`), which gives
random access to any document range.
"""

import functools
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nanochat_hf.embedded_corpus import iter_embedded_documents
from nanochat_hf.errors import UserInputError


logger = logging.getLogger(__name__)

DEFAULT_HUB_DATASET = "karpathy/fineweb-edu-100b-shuffle"
EMBEDDED = "embedded"
TEXT_COLUMN = "text"
SPLITS = ("train", "validation")

# Held-out share of a single-file (or in-memory) source; nanochat holds out a whole shard instead.
HELD_OUT_FRACTION = 0.05

PARQUET_SUFFIXES = (".parquet",)
JSON_SUFFIXES = (".jsonl", ".json")
TEXT_SUFFIXES = (".txt",)
KNOWN_SUFFIXES = PARQUET_SUFFIXES + JSON_SUFFIXES + TEXT_SUFFIXES

# "owner/name" as the Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Block:
    """A unit of documents read in one go: a parquet row group, or a whole in-memory table."""

    file: int  # index into the source's `files` (0 for in-memory tables)
    row_group: int
    num_docs: int


@dataclass(frozen=True)
class Chunk:
    """Documents `start:stop` of block `block`: the unit the loader shards, orders and seeks by."""

    block: int
    start: int
    stop: int

    @property
    def num_docs(self) -> int:
        return self.stop - self.start


class TextSource:
    """An ordered list of blocks of documents; `read_block(i)` returns block i's texts."""

    name: str
    files: list[str]
    blocks: list[Block]

    def read_block(self, index: int) -> list[str]:
        raise NotImplementedError

    def read_chunk(self, chunk: Chunk) -> list[str]:
        return self.read_block(chunk.block)[chunk.start : chunk.stop]

    @property
    def num_docs(self) -> int:
        return sum(block.num_docs for block in self.blocks)

    def split_chunks(self, split: str) -> list[Chunk]:
        """The chunks of `split` ("train" or "validation"), in source order; one chunk per block."""
        if split not in SPLITS:
            raise UserInputError(f"split must be one of {SPLITS}, got {split!r}")
        if len(self.files) >= 2:
            # nanochat: the last file (sorted) is the validation shard.
            val_file = len(self.files) - 1
            keep = (lambda b: b.file == val_file) if split == "validation" else (lambda b: b.file != val_file)
            return [Chunk(i, 0, b.num_docs) for i, b in enumerate(self.blocks) if keep(b) and b.num_docs]
        # One file or an in-memory table: hold out the last documents, across block boundaries.
        held_out = max(1, round(HELD_OUT_FRACTION * self.num_docs))
        if self.num_docs < 2:
            raise UserInputError(
                f"{self.name}: has {self.num_docs} document(s); need at least 2 to hold one out for validation"
            )
        first_val_doc = self.num_docs - held_out
        lo, hi = (first_val_doc, self.num_docs) if split == "validation" else (0, first_val_doc)
        chunks, offset = [], 0
        for i, block in enumerate(self.blocks):
            start, stop = max(lo - offset, 0), min(hi - offset, block.num_docs)
            if start < stop:
                chunks.append(Chunk(i, start, stop))
            offset += block.num_docs
        return chunks

    def iter_documents(self, split: str = "train") -> Iterator[str]:
        """The documents of `split` in source order, read one block at a time (for tokenizer training)."""
        for chunk in self.split_chunks(split):
            yield from self.read_chunk(chunk)

    def fingerprint(self) -> dict:
        """What identifies this source in a saved data position (checked again on resume)."""
        return {"name": self.name, "files": len(self.files), "blocks": len(self.blocks), "documents": self.num_docs}


def split_into_lanes_chunks(chunks: Sequence[Chunk], min_chunks: int, where: str) -> list[Chunk]:
    """Cut chunks into smaller contiguous ranges until there are at least `min_chunks` of them.

    Every data lane needs chunks of its own; small sources (one row group, one jsonl file) are split
    evenly by documents. Large sources have far more chunks than lanes and are returned unchanged.
    """
    chunks = list(chunks)
    total_docs = sum(c.num_docs for c in chunks)
    if total_docs < min_chunks:
        raise UserInputError(
            f"{where}: has {total_docs} document(s) but needs at least {min_chunks} (one per data lane); "
            "use a larger corpus or fewer data lanes"
        )
    if len(chunks) >= min_chunks:
        return chunks
    max_docs = max(1, total_docs // min_chunks)
    refined = []
    for chunk in chunks:
        pieces = math.ceil(chunk.num_docs / max_docs)
        bounds = [chunk.start + (chunk.num_docs * k) // pieces for k in range(pieces + 1)]
        refined += [Chunk(chunk.block, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if a < b]
    return refined


# --------------------------------------------------------------------------------------------------
# Parquet (local or Hub)


class ParquetSource(TextSource):
    """Parquet files read a row group at a time with pyarrow; paths may be local or `hf://` URLs."""

    def __init__(self, name: str, files: list[str]):
        self.name = name
        self.files = list(files)
        self._last_block: tuple[int, list[str]] | None = None
        # Footers are small but remote ones cost a round trip each: read them concurrently.
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(self.files)))) as pool:
            row_group_sizes = list(pool.map(self._row_group_sizes, self.files))
        self.blocks = [
            Block(file_index, row_group, num_rows)
            for file_index, sizes in enumerate(row_group_sizes)
            for row_group, num_rows in enumerate(sizes)
        ]

    @staticmethod
    def _open(path: str):
        import fsspec

        return fsspec.open(path, "rb").open()

    def _row_group_sizes(self, path: str) -> list[int]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with self._open(path) as handle:
                metadata = pq.ParquetFile(handle).metadata
                schema = metadata.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as err:
            raise UserInputError(f"{path}: cannot read as a parquet file ({err})") from err
        if TEXT_COLUMN not in schema.names:
            raise UserInputError(
                f"{path}: parquet file has no '{TEXT_COLUMN}' column (columns: {', '.join(schema.names) or 'none'}); "
                f"pretraining reads documents from a string column named '{TEXT_COLUMN}'"
            )
        column_type = schema.field(TEXT_COLUMN).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise UserInputError(f"{path}: column '{TEXT_COLUMN}' has type {column_type}, expected string")
        return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    def read_block(self, index: int) -> list[str]:
        import pyarrow.parquet as pq

        # Keep the last row group read: the sub-chunks of a small source share row groups.
        if self._last_block is not None and self._last_block[0] == index:
            return self._last_block[1]
        block = self.blocks[index]
        with self._open(self.files[block.file]) as handle:
            table = pq.ParquetFile(handle).read_row_group(block.row_group, columns=[TEXT_COLUMN])
        texts = [text or "" for text in table.column(0).to_pylist()]
        self._last_block = (index, texts)
        return texts


# --------------------------------------------------------------------------------------------------
# In-memory / memory-mapped tables: jsonl, txt, embedded


class TableSource(TextSource):
    """A table of documents with random access (a `datasets.Dataset` or a list), as a single block."""

    def __init__(self, name: str, files: list[str], texts, strip_newlines: bool = False):
        self.name = name
        self.files = list(files)
        self._texts = texts
        self._strip_newlines = strip_newlines
        self.blocks = [Block(0, 0, len(texts))]

    def read_block(self, index: int) -> list[str]:
        return self.read_range(0, len(self._texts))

    def read_chunk(self, chunk: Chunk) -> list[str]:
        return self.read_range(chunk.start, chunk.stop)

    def read_range(self, start: int, stop: int) -> list[str]:
        rows = self._texts[start:stop]
        if isinstance(rows, dict):  # a datasets.Dataset slice is a dict of columns
            rows = rows[TEXT_COLUMN]
        if self._strip_newlines:  # datasets' paragraph reader keeps the file's final newline
            return [(text or "").strip("\n") for text in rows]
        return [text or "" for text in rows]


class MultiFileTableSource(TableSource):
    """A table made of several files: one block per file, so the last file can be held out."""

    def __init__(self, name: str, files: list[str], texts, docs_per_file: list[int], strip_newlines: bool = False):
        super().__init__(name, files, texts, strip_newlines)
        self._file_offsets = [0]
        for count in docs_per_file:
            self._file_offsets.append(self._file_offsets[-1] + count)
        self.blocks = [Block(i, 0, count) for i, count in enumerate(docs_per_file)]

    def read_block(self, index: int) -> list[str]:
        return self.read_range(self._file_offsets[index], self._file_offsets[index + 1])

    def read_chunk(self, chunk: Chunk) -> list[str]:
        base = self._file_offsets[chunk.block]
        return self.read_range(base + chunk.start, base + chunk.stop)


def _load_table_files(files: list[str], kind: str) -> TextSource:
    import datasets

    name = files[0] if len(files) == 1 else f"{os.path.dirname(files[0]) or '.'} ({len(files)} {kind} files)"
    tables, counts = [], []
    for path in files:
        try:
            if kind == "json":
                table = datasets.load_dataset("json", data_files=[path], split="train")
            else:
                table = datasets.load_dataset("text", data_files=[path], split="train", sample_by="paragraph")
        except Exception as err:  # datasets raises several types (DatasetGenerationError, ArrowInvalid, ...)
            raise UserInputError(f"{path}: cannot read as {kind} ({type(err).__name__}: {err})") from err
        if TEXT_COLUMN not in table.column_names:
            raise UserInputError(
                f"{path}: records have no '{TEXT_COLUMN}' field (fields: {', '.join(table.column_names) or 'none'})"
            )
        tables.append(table.select_columns([TEXT_COLUMN]))
        counts.append(len(table))
    texts = datasets.concatenate_datasets(tables) if len(tables) > 1 else tables[0]
    strip = kind == "text"
    if len(files) == 1:
        return TableSource(name, files, texts, strip)
    return MultiFileTableSource(name, files, texts, counts, strip)


@functools.cache
def _embedded_documents() -> tuple[str, ...]:
    return tuple(iter_embedded_documents())


# --------------------------------------------------------------------------------------------------
# Resolution


def _files_in(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KNOWN_SUFFIXES)


def _resolve_local(paths: list[Path]) -> TextSource:
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserInputError(f"{path}: no such file or folder (expected pretraining text: parquet, jsonl or txt)")
        if not os.access(path, os.R_OK):
            raise UserInputError(f"{path}: not readable")
        found = _files_in(path)
        if path.is_dir() and not found:
            raise UserInputError(f"{path}: folder holds no {'/'.join(KNOWN_SUFFIXES)} files")
        files += found
    suffixes = {f.suffix.lower() for f in files}
    unknown = suffixes - set(KNOWN_SUFFIXES)
    if unknown:
        raise UserInputError(
            f"{files[0]}: unsupported file type {sorted(unknown)[0]!r}; expected one of {', '.join(KNOWN_SUFFIXES)}"
        )
    kinds = {"parquet" if s in PARQUET_SUFFIXES else "json" if s in JSON_SUFFIXES else "text" for s in suffixes}
    if len(kinds) > 1:
        raise UserInputError(
            f"{', '.join(str(p) for p in paths)}: mixes {' and '.join(sorted(kinds))} files; use one kind per source"
        )
    for f in files:
        if not os.access(f, os.R_OK):
            raise UserInputError(f"{f}: not readable")
    names = [str(f) for f in files]
    kind = kinds.pop()
    if kind == "parquet":
        label = names[0] if len(names) == 1 else ", ".join(str(p) for p in paths)
        return ParquetSource(label, names)
    return _load_table_files(names, kind)


def _resolve_hub(repo_id: str) -> TextSource:
    """The parquet shards of a Hub dataset repository, pinned to its current revision."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().dataset_info(repo_id, files_metadata=False)
    except Exception as err:  # offline, unknown repo, gated, ...
        raise UserInputError(
            f"dataset {repo_id!r}: not a local path, and the Hub dataset could not be reached ({type(err).__name__}: "
            f"{err}); for an offline run pass local files or 'embedded'"
        ) from err
    paths = sorted(s.rfilename for s in (info.siblings or []) if s.rfilename.endswith(".parquet"))
    if not paths:
        raise UserInputError(f"dataset {repo_id!r}: the Hub repository holds no parquet files")
    # Pin the revision so every rank (and a resumed run) sees the same shard list.
    urls = [f"hf://datasets/{repo_id}@{info.sha}/{p}" for p in paths]
    logger.info("dataset %s@%s: %d parquet shards (the last is the validation shard)", repo_id, info.sha, len(urls))
    return ParquetSource(repo_id, urls)


def open_text_source(source: str | os.PathLike | Sequence[str | os.PathLike] = DEFAULT_HUB_DATASET) -> TextSource:
    """Resolve a source spec (see the module docstring) and check it can be read."""
    if isinstance(source, (str, os.PathLike)):
        spec = os.fspath(source)
        if spec == EMBEDDED:
            documents = _embedded_documents()
            return TableSource(EMBEDDED, [], documents)
        path = Path(spec).expanduser()
        if not path.exists() and _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
            return _resolve_hub(spec)
        return _resolve_local([path])
    paths = [Path(os.fspath(p)).expanduser() for p in source]
    if not paths:
        raise UserInputError("dataset: empty list of files")
    return _resolve_local(paths)
