"""Pretraining rows: documents -> BOS-prefixed tokens -> rows of `sequence_len + 1` tokens.

Two packings, chosen with `packing` (the rows of both are T + 1 tokens, T = sequence_len; nothing is
padded or masked):

- `stream`, nanochat generation 1: documents are tokenized with BOS prepended (never EOS) and
  concatenated into one token stream that is cut into consecutive rows. Rows start mid-document; every
  token lands in exactly one row. nanochat pops B*T + 1 tokens per micro-batch instead of T + 1 per row
  (one token fewer per row); rows of T + 1 make the data independent of the micro-batch size, so
  micro-batch 2 x accumulation 2 trains on exactly what micro-batch 4 x 1 does.
- `best_fit`, nanochat generation 2 (BOS-aligned best fit): every row starts with BOS at a document
  start; a buffer of tokenized documents is searched for the largest one that fits the space left, and
  when none fits the shortest is cropped to fill the row (its rest is dropped). About a third of the
  tokens are dropped at T = 2048, in exchange for rows in which every token sees its document's start.
  See `lanes.py` for the details (ties, the buffer's warm-up).

What the model gets, in Hugging Face's convention: `input_ids = row[:T]`, `labels = row[:T]` (unshifted,
the model shifts) and `shift_labels = row[1:]`, the targets already shifted. transformers'
`ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
shift_labels=None)` (transformers/loss/loss_utils.py) uses `shift_labels` as given when present, so all
T targets count, as in nanochat; from `labels` alone it would pad-and-shift and train T - 1 targets per
row. The Trainer also counts `shift_labels` for `num_items_in_batch` (`Trainer._get_num_items_in_batch`).
Two Trainer settings matter: `remove_unused_columns=False` (otherwise its collator drops the
`shift_labels` key, which `NanoChatHFForCausalLM.forward` takes through `**kwargs`) and a collator that
stacks tensors (`transformers.default_data_collator`), not the tokenizer-padding default.

Data lanes (sharding). The training chunks (parquet row groups, or document ranges of small sources,
see `sources.py`) are dealt round-robin into `num_lanes` independent lanes: lane l reads chunks l,
l + L, l + 2L, ... and loops over them forever (epochs), packing its own rows. Rank r of W owns the
contiguous lanes [r*L/W, (r+1)*L/W) and its rows alternate over them: rank row j comes from its lane
j mod (L/W). So ranks read disjoint data, nobody reads anything twice, and - the point of lanes rather
than "one stream per rank" - the rows of an optimizer step do not depend on how they are split over
processes: when rows per step (micro-batch x accumulation x W) is a multiple of L, every lane
contributes the same rows to each step for any W dividing L. One process with accumulation 2g sees
exactly the rows that two processes with accumulation g see. The default L = 8 covers W = 1, 2, 4, 8;
L must stay fixed to resume. Both packings work per lane, so both have this property.

Determinism: with `seed=None` chunks are read in source order (nanochat's shards are pre-shuffled);
with an integer seed the chunk list is permuted once before dealing and each lane's order again per
epoch, all from `random.Random` seeded by strings, so runs and machines agree.

Resume without re-reading. A stream lane's position is four integers (epoch, chunk, document, token
offset): reading one chunk and tokenizing a few documents restores it. A best-fit lane adds the list of
documents in its buffer (their positions and lengths). The dataset remembers, per lane, what it needs to
give the state at the start of every row it recently produced. A DataLoader, accelerate and our own
prefetch thread produce rows the trainer has not consumed yet, so the state is asked for at a *consumed
row count*: `state_dict(consumed_rows)` with consumed_rows = global_step x grad_accum x micro_batch
(rows of this rank) returns, for each lane, the state at its first unconsumed row. Restoring it with
`load_state_dict` makes the next `__iter__` yield exactly the row an uninterrupted run would have
yielded next. Train with `ignore_data_skip=True` so the Trainer does not also skip batches. The state
is saved per rank as `data_state_rank{r}.json` in the checkpoint folder (`save_data_state`,
`load_data_state`); the lanes of all ranks together describe the whole run, so a run can resume with a
different number of processes (same L) as long as every lane stopped at the same row count.

Speed. Text is encoded with the fastest exact encoder (`nanochat_hf.data.encoding`: tiktoken when
it gives the tokenizer's ids exactly, else the tokenizer's Rust batch path), into flat numpy buffers that
rows are sliced from. When training on a GPU, rows are produced `prefetch_rows` ahead in a background thread
(reading parquet and tokenizing release the GIL, so this overlaps the training step), and each lane
reads its next chunk while it consumes the current one. Nothing in the lane loops over tokens in Python.

Limits: the DataLoader must use `num_workers=0`; worker processes would each hold their own copy of the
position (the thread above does the work a worker would). Under multi-process training the dataset
shards itself: hand the Trainer a plain DataLoader (see `build_train_dataloader`) rather than letting
accelerate re-shard an IterableDataset (its `IterableDatasetShard` would make every rank read everything,
and `dispatch_batches` would read it all on rank 0).
"""

import json
import logging
import math
import random
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nanochat_hf.atomic import write_json_atomically
from nanochat_hf.data.encoding import batch_encoder
from nanochat_hf.data.lanes import BestFitPacker, LanePosition, LaneReader, StreamPacker
from nanochat_hf.data.prefetch import BackgroundIterator
from nanochat_hf.data.sources import DEFAULT_HUB_DATASET, TextSource, open_text_source, split_into_lanes_chunks
from nanochat_hf.defaults import SEQUENCE_LEN
from nanochat_hf.errors import UserInputError


logger = logging.getLogger(__name__)

STATE_FORMAT = "nanochat_hf.pretrain_rows/1"
DATA_STATE_FILENAME = "data_state_rank{rank}.json"
DEFAULT_NUM_LANES = 8
TOKENIZER_BATCH_SIZE = 128  # nanochat tokenizes 128 documents at a time
PACKINGS = ("stream", "best_fit")  # nanochat generation 1 and generation 2
DEFAULT_PACKING = {1: "stream", 2: "best_fit"}
BEST_FIT_BUFFER_SIZE = 1000  # documents in nanochat's best-fit buffer
DEFAULT_PREFETCH_ROWS = 64  # rows the background thread keeps ready when training on a GPU
READ_THREADS = 4  # chunks read concurrently (each lane reads one ahead)


def default_num_lanes(world_size: int) -> int:
    """8 lanes (so 1, 2, 4 and 8 processes see identical data), rounded up to a multiple of world_size."""
    return world_size * math.ceil(DEFAULT_NUM_LANES / world_size)


def make_batch_encoder(tokenizer, prefer: str = "auto"):
    """The fastest exact batch encoder for `tokenizer` (tiktoken when exact, else the Rust batch path)."""
    return batch_encoder(tokenizer, prefer=prefer)


class _Progress:
    """What one `__iter__` is producing: rank rows so far and the packer of each lane (under `lock`)."""

    def __init__(self, rows: int, packers: dict):
        self.rows = rows
        self.packers = packers
        self.lock = threading.Lock()


class PretrainDataset(IterableDataset):
    """Infinite stream of packed pretraining rows for one rank (see the module docstring).

    Each item is a dict of 1-D LongTensors of length `sequence_len`: `input_ids`, `labels` (= input_ids)
    and `shift_labels` (the next-token targets, `row[1:]`).

    `packing`: "stream" (generation 1: rows cut from the document stream) or "best_fit" (generation 2:
    BOS-aligned best-fit rows from a buffer of `buffer_size` documents per lane). `encoder`: "auto"
    (tiktoken when it gives the tokenizer's ids exactly), "tiktoken", "tokenizers", or an encoder object
    from `nanochat_hf.data.encoding.batch_encoder`. `prefetch_rows`: rows produced ahead in a
    background thread (0: in the iterating thread; None: 64 when CUDA is available, else 0, because when
    the CPU itself trains, tokenizing ahead only competes with the training step for the same cores).
    """

    def __init__(
        self,
        source,
        tokenizer,
        sequence_len: int,
        *,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        num_lanes: int | None = None,
        seed: int | None = None,
        tokenizer_batch_size: int = TOKENIZER_BATCH_SIZE,
        packing: str = "stream",
        buffer_size: int = BEST_FIT_BUFFER_SIZE,
        encoder="auto",
        prefetch_rows: int | None = None,
    ):
        super().__init__()
        if not isinstance(sequence_len, int) or sequence_len < 1:
            raise UserInputError(f"sequence_len must be a positive integer, got {sequence_len!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise UserInputError(f"rank {rank!r} / world_size {world_size!r}: need 0 <= rank < world_size")
        num_lanes = default_num_lanes(world_size) if num_lanes is None else num_lanes
        if not isinstance(num_lanes, int) or num_lanes < 1 or num_lanes % world_size:
            raise UserInputError(
                f"num_lanes ({num_lanes}) must be a positive multiple of the number of processes ({world_size})"
            )
        if packing not in PACKINGS:
            raise UserInputError(f"packing must be one of {' | '.join(PACKINGS)}, got {packing!r}")
        if not isinstance(buffer_size, int) or buffer_size < 1:
            raise UserInputError(f"buffer_size must be a positive integer, got {buffer_size!r}")
        if not isinstance(tokenizer_batch_size, int) or tokenizer_batch_size < 1:
            raise UserInputError(f"tokenizer_batch_size must be a positive integer, got {tokenizer_batch_size!r}")
        if prefetch_rows is None:
            prefetch_rows = DEFAULT_PREFETCH_ROWS if torch.cuda.is_available() else 0
        if not isinstance(prefetch_rows, int) or prefetch_rows < 0:
            raise UserInputError(f"prefetch_rows must be a non-negative integer, got {prefetch_rows!r}")
        bos_id = getattr(tokenizer, "bos_token_id", None)
        if bos_id is None:
            raise UserInputError(
                "tokenizer has no BOS token (bos_token_id is None); nanochat prefixes every document with it"
            )

        self.source = source if isinstance(source, TextSource) else open_text_source(source)
        self.split = split
        self.sequence_len = sequence_len
        self.rank, self.world_size, self.num_lanes = rank, world_size, num_lanes
        self.seed = seed
        self.packing, self.buffer_size = packing, buffer_size
        self.prefetch_rows = prefetch_rows
        self.bos_token_id = int(bos_id)
        self._tokenizer_batch_size = tokenizer_batch_size
        self._encoder = encoder if hasattr(encoder, "encode_flat") else make_batch_encoder(tokenizer, encoder)

        chunks = split_into_lanes_chunks(
            self.source.split_chunks(split), num_lanes, where=f"{self.source.name} ({split} split)"
        )
        if seed is not None:
            random.Random(f"{seed}/chunks").shuffle(chunks)
        self._chunks_per_lane = {lane: chunks[lane::num_lanes] for lane in range(num_lanes)}
        lanes_per_rank = num_lanes // world_size
        self.lanes = list(range(rank * lanes_per_rank, (rank + 1) * lanes_per_rank))

        # Where the next __iter__ starts (changed only by load_state_dict) ...
        self._start_lanes = {lane: self._initial_lane_state() for lane in self.lanes}
        self._start_rows = 0
        # ... and what the current one is producing.
        self._progress: _Progress | None = None
        self._active = None  # weak reference to the current background iterator

    @property
    def encoder_name(self) -> str:
        """Which encoder tokenizes: "tiktoken" or "tokenizers"."""
        return self._encoder.name

    @property
    def start_rows(self) -> int:
        """Rows of this rank already consumed where the next `__iter__` starts (> 0 after a restore)."""
        return self._start_rows

    def _initial_lane_state(self) -> dict:
        state = {"rows": 0, **asdict(LanePosition())}
        return {**state, "buffer": []} if self.packing == "best_fit" else state

    def __getstate__(self):  # locks, threads and pools stay with the process that made them
        return {**self.__dict__, "_progress": None, "_active": None}

    # ---- iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise UserInputError(
                "PretrainDataset: use dataloader_num_workers=0 (each worker would produce the same rows; "
                "the dataset already tokenizes in a background thread, in parallel)"
            )
        previous = self._active() if self._active is not None else None
        if previous is not None:
            previous.close()  # a new pass starts from the start state; the old thread stops
        read_pool = ThreadPoolExecutor(min(len(self.lanes), READ_THREADS), thread_name_prefix="data-read")
        row_len = self.sequence_len + 1
        packers = {}
        for lane_id in self.lanes:
            reader = LaneReader(
                lane_id,
                self._chunks_per_lane[lane_id],
                self.source,
                self._encoder,
                self.bos_token_id,
                self.seed,
                self._tokenizer_batch_size,
                read_pool,
            )
            state = self._start_lanes[lane_id]
            if self.packing == "stream":
                packers[lane_id] = StreamPacker(reader, row_len, state)
            else:
                packers[lane_id] = BestFitPacker(reader, row_len, self.buffer_size, state)
        progress = _Progress(self._start_rows, packers)
        self._progress = progress
        rows = self._rows(progress, read_pool)
        if not self.prefetch_rows:
            return rows
        iterator = BackgroundIterator(rows, self.prefetch_rows, name=f"data-rows-{self.split}")
        self._active = weakref.ref(iterator)
        return iterator

    def _rows(self, progress: _Progress, read_pool: ThreadPoolExecutor) -> Iterator[dict[str, torch.Tensor]]:
        order = [progress.packers[lane] for lane in self.lanes]
        try:
            for packer in order:
                packer.reader.start_reading()  # every lane's first chunk at once
            while True:
                with progress.lock:
                    tokens = order[progress.rows % len(order)].take_row()
                    progress.rows += 1
                row = torch.from_numpy(tokens.astype(np.int64))
                yield {"input_ids": row[:-1], "labels": row[:-1].clone(), "shift_labels": row[1:]}
        finally:
            read_pool.shutdown(wait=False, cancel_futures=True)

    # ---- resume state

    def _lane_rows_at(self, local_lane: int, rank_rows: int) -> int:
        """Rows lane `local_lane` (0-based among this rank's lanes) has given when the rank has given `rank_rows`."""
        m = len(self.lanes)

        def count_before(x):  # rank rows j < x with j % m == local_lane
            return -(-(x - local_lane) // m)

        lane_id = self.lanes[local_lane]
        return int(self._start_lanes[lane_id]["rows"]) + count_before(rank_rows) - count_before(self._start_rows)

    def _settings(self) -> dict:
        settings = {
            "source": self.source.fingerprint(),
            "split": self.split,
            "sequence_len": self.sequence_len,
            "num_lanes": self.num_lanes,
            "seed": self.seed,
            "packing": self.packing,
        }
        if self.packing == "best_fit":
            settings["buffer_size"] = self.buffer_size
        return settings

    def state_dict(self, consumed_rows: int | None = None) -> dict:
        """The position after this rank's first `consumed_rows` rows (default: every row produced so far).

        `consumed_rows` counts rows of this rank since the start of training (not since the resume): the
        trainer consumed global_step x gradient_accumulation_steps x per_device_batch_size of them.
        """
        progress = self._progress
        lock = progress.lock if progress is not None else threading.Lock()
        with lock:
            produced = progress.rows if progress is not None else self._start_rows
            consumed = produced if consumed_rows is None else int(consumed_rows)
            if not self._start_rows <= consumed <= produced:
                raise ValueError(
                    f"consumed_rows={consumed} is outside the rows this dataset produced "
                    f"({self._start_rows}..{produced}); is the count per rank and since the start of training?"
                )
            lanes = {}
            for local_lane, lane_id in enumerate(self.lanes):
                lane_row = self._lane_rows_at(local_lane, consumed)
                if progress is None:
                    lanes[str(lane_id)] = dict(self._start_lanes[lane_id])
                else:
                    lanes[str(lane_id)] = progress.packers[lane_id].state_at(lane_row)
        return {
            "format": STATE_FORMAT,
            **self._settings(),
            "saved_by": [{"rank": self.rank, "world_size": self.world_size, "lanes": self.lanes, "rows": consumed}],
            "lanes": lanes,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue, at the next `__iter__`, from a state saved by `state_dict` (or merged by `load_data_state`)."""
        if state.get("format") != STATE_FORMAT:
            raise UserInputError(f"data state: format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        state = {"packing": "stream", **state}  # states written before best-fit packing existed
        for key, value in self._settings().items():
            if state.get(key) != value:
                raise UserInputError(
                    f"data state: {key} is {state.get(key)!r} but this run has {value!r}; resume with the same data settings"
                )
        saved = state["lanes"]
        missing = [lane for lane in self.lanes if str(lane) not in saved]
        if missing:
            raise UserInputError(f"data state: has no position for data lane(s) {missing} of rank {self.rank}")
        lanes = {lane: dict(saved[str(lane)]) for lane in self.lanes}
        for lane, entry in lanes.items():  # check the position against this corpus now, not at the first batch
            chunk = entry.get("chunk")
            if not isinstance(chunk, int) or not 0 <= chunk < len(self._chunks_per_lane[lane]):
                raise UserInputError(f"data state: lane {lane} position {entry} is outside this corpus")
            if self.packing == "best_fit" and not isinstance(entry.get("buffer"), list):
                raise UserInputError(f"data state: best-fit lane {lane} has no list of buffered documents")
        lane_rows = {lane: int(entry["rows"]) for lane, entry in lanes.items()}

        same_split = [entry for entry in state.get("saved_by", []) if list(entry["lanes"]) == self.lanes]
        if same_split:
            # The same lanes were saved by one rank: keep its exact row count (lanes may differ by one row).
            rows = int(same_split[0]["rows"])
        else:
            # Lanes re-dealt over a different number of processes: only exact at a step boundary where
            # every lane has given the same number of rows.
            if len(set(lane_rows.values())) != 1:
                raise UserInputError(
                    "data state: the data lanes stopped at different rows "
                    f"({sorted(set(lane_rows.values()))}); resume with the number of processes that saved it"
                )
            rows = next(iter(lane_rows.values())) * len(self.lanes)
        self._start_lanes, self._start_rows = lanes, rows
        self._progress = None


def consumed_rows(global_step: int, gradient_accumulation_steps: int, per_device_batch_size: int) -> int:
    """Rows one rank has handed to the model after `global_step` optimizer steps."""
    return global_step * gradient_accumulation_steps * per_device_batch_size


def save_data_state(dataset: PretrainDataset, checkpoint_dir, consumed_rows: int | None = None) -> Path:
    """Write this rank's data position as `data_state_rank{r}.json` in `checkpoint_dir` (atomically)."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATA_STATE_FILENAME.format(rank=dataset.rank)
    write_json_atomically(path, dataset.state_dict(consumed_rows))
    return path


def load_data_state(dataset: PretrainDataset, checkpoint_dir) -> None:
    """Restore `dataset` from the `data_state_rank*.json` files of a checkpoint (all ranks' files merged)."""
    folder = Path(checkpoint_dir)
    paths = sorted(folder.glob(DATA_STATE_FILENAME.format(rank="*")))
    if not paths:
        raise UserInputError(f"{folder}: no {DATA_STATE_FILENAME.format(rank='*')} files (no saved data position)")
    merged: dict | None = None
    for path in paths:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise UserInputError(f"{path}: unreadable data state ({err})") from err
        if merged is None:
            merged = {**state, "lanes": dict(state["lanes"]), "saved_by": list(state.get("saved_by", []))}
        else:
            merged["lanes"].update(state["lanes"])
            merged["saved_by"] += state.get("saved_by", [])
    dataset.load_state_dict(merged)


def build_pretrain_datasets(
    source=DEFAULT_HUB_DATASET,
    tokenizer=None,
    sequence_len: int = SEQUENCE_LEN,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_lanes: int | None = None,
    seed: int | None = None,
    packing: str = "stream",
    buffer_size: int = BEST_FIT_BUFFER_SIZE,
    encoder="auto",
) -> tuple[PretrainDataset, PretrainDataset]:
    """The training and validation datasets of one rank, sharing one opened source and one encoder."""
    text_source = source if isinstance(source, TextSource) else open_text_source(source)
    if not hasattr(encoder, "encode_flat"):
        encoder = make_batch_encoder(tokenizer, encoder) if tokenizer is not None else encoder
    common = dict(
        rank=rank,
        world_size=world_size,
        num_lanes=num_lanes,
        seed=seed,
        packing=packing,
        buffer_size=buffer_size,
        encoder=encoder,
    )
    train = PretrainDataset(text_source, tokenizer, sequence_len, split="train", **common)
    validation = PretrainDataset(text_source, tokenizer, sequence_len, split="validation", **common)
    return train, validation


def build_train_dataloader(dataset: PretrainDataset, batch_size: int, pin_memory: bool = False):
    """A plain DataLoader over a self-sharding dataset (no worker processes, tensors stacked)."""
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    return DataLoader(
        dataset, batch_size=batch_size, collate_fn=default_data_collator, num_workers=0, pin_memory=pin_memory
    )
