"""Pretraining rows: documents -> BOS-prefixed token stream -> rows of `sequence_len + 1` tokens.

What one row is (nanochat generation 1's data loader): documents are tokenized in
batches of 128, each gets BOS prepended (never EOS), and they are concatenated into one token stream
that is cut into consecutive rows of T + 1 tokens (T = sequence_len). Rows start mid-document; nothing
is padded or masked; every token lands in exactly one row. nanochat pops B*T + 1 tokens per micro-batch
instead of T + 1 per row (one token fewer per row); rows of T + 1 make the data independent of the
micro-batch size, so micro-batch 2 x accumulation 2 trains on exactly what micro-batch 4 x 1 does.

What the model gets, in Hugging Face's convention: `input_ids = row[:T]`, `labels = row[:T]` (unshifted,
the model shifts) and `shift_labels = row[1:]`, the targets already shifted. transformers'
`ForCausalLMLoss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
shift_labels=None)` (transformers/loss/loss_utils.py) uses `shift_labels` as given when present, so all
T targets count, as in nanochat; from `labels` alone it would pad-and-shift and train T - 1 targets per
row. The Trainer also counts `shift_labels` for `num_items_in_batch` (`Trainer._get_num_items_in_batch`).
Two Trainer settings matter: `remove_unused_columns=False` (otherwise its collator drops the
`shift_labels` key, which `NanoChatForCausalLM.forward` takes through `**kwargs`) and a collator that
stacks tensors (`transformers.default_data_collator`), not the tokenizer-padding default.

Data lanes (sharding). The training chunks (parquet row groups, or document ranges of small sources,
see `sources.py`) are dealt round-robin into `num_lanes` independent token streams: lane l reads
chunks l, l + L, l + 2L, ... and loops over them forever (epochs). Rank r of W owns the contiguous
lanes [r*L/W, (r+1)*L/W) and its rows alternate over them: rank row j comes from its lane j mod (L/W).
So ranks read disjoint data, nobody reads anything twice, and - the point of lanes rather than "one
stream per rank" - the rows of an optimizer step do not depend on how they are split over processes:
when rows per step (micro-batch x accumulation x W) is a multiple of L, every lane contributes the same
rows to each step for any W dividing L. One process with accumulation 2g sees exactly the rows that two
processes with accumulation g see. The default L = 8 covers W = 1, 2, 4, 8; L must stay fixed to resume.

Determinism: with `seed=None` chunks are read in source order (nanochat's shards are pre-shuffled);
with an integer seed the chunk list is permuted once before dealing and each lane's order again per
epoch, all from `random.Random` seeded by strings, so runs and machines agree.

Resume without re-reading. A lane's position is four integers (epoch, chunk, document, token offset):
reading one chunk and tokenizing one batch of documents restores it. The dataset remembers the start
position of every row it recently produced, per lane. A DataLoader and accelerate prefetch rows the
trainer has not consumed yet, so the state is asked for at a *consumed row count*:
`state_dict(consumed_rows)` with consumed_rows = global_step x grad_accum x micro_batch (rows of this
rank) returns, for each lane, the position of its first unconsumed row. Restoring it with
`load_state_dict` makes the next `__iter__` yield exactly the row an uninterrupted run would have
yielded next. Train with `ignore_data_skip=True` so the Trainer does not also skip batches. The state
is saved per rank as `data_state_rank{r}.json` in the checkpoint folder (`save_data_state`,
`load_data_state`); the lanes of all ranks together describe the whole run, so a run can resume with a
different number of processes (same L) as long as every lane stopped at the same row count.

Limits: tokenization runs in the iterating process (the Rust tokenizer parallelises each batch), so the
DataLoader must use `num_workers=0`; worker processes would each hold their own copy of the position.
Under multi-process training the dataset shards itself: hand the Trainer a plain DataLoader (see
`build_train_dataloader`) rather than letting accelerate re-shard an IterableDataset (its
`IterableDatasetShard` would make every rank read everything, and `dispatch_batches` would read it all
on rank 0).
"""

import copy
import json
import logging
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from nanochat_hf.atomic import write_json_atomically
from nanochat_hf.data.sources import (
    DEFAULT_HUB_DATASET,
    Chunk,
    TextSource,
    open_text_source,
    split_into_lanes_chunks,
)
from nanochat_hf.defaults import SEQUENCE_LEN
from nanochat_hf.errors import UserInputError


logger = logging.getLogger(__name__)

STATE_FORMAT = "nanochat_hf.pretrain_rows/1"
DATA_STATE_FILENAME = "data_state_rank{rank}.json"
DEFAULT_NUM_LANES = 8
TOKENIZER_BATCH_SIZE = 128  # nanochat tokenizes 128 documents at a time
# Row start positions remembered per lane; only rows prefetched beyond the consumed count are looked
# up, which is a few batches, so this is generous.
HISTORY_ROWS_PER_LANE = 8192


def default_num_lanes(world_size: int) -> int:
    """8 lanes (so 1, 2, 4 and 8 processes see identical data), rounded up to a multiple of world_size."""
    return world_size * math.ceil(DEFAULT_NUM_LANES / world_size)


@dataclass(frozen=True)
class LanePosition:
    """Where a lane's next row starts: document `doc` of the `chunk`-th chunk of epoch `epoch`'s order,
    token `token` of that document's tokens (BOS included)."""

    epoch: int = 0
    chunk: int = 0
    doc: int = 0
    token: int = 0


def make_batch_encoder(tokenizer):
    """`encode(list_of_texts) -> list of token-id lists`, without special tokens, as nanochat's encode_ordinary.

    A copy of the fast tokenizer's backend is told to treat special-token strings such as "<|bos|>"
    appearing *inside* web text as plain text: only our own BOS id marks a document boundary.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserInputError(
            f"tokenizer {type(tokenizer).__name__}: need a fast tokenizer (PreTrainedTokenizerFast) for batched encoding"
        )
    backend = copy.deepcopy(backend)
    backend.encode_special_tokens = True
    backend.no_truncation()
    backend.no_padding()

    def encode(texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]

    return encode


class _Lane:
    """One token stream over its own chunks, with a cursor that can be set to any `LanePosition`."""

    def __init__(self, lane_id: int, chunks: list[Chunk], source: TextSource, encode, bos_id: int, seed, batch_size):
        self.lane_id = lane_id
        self.chunks = chunks
        self.source = source
        self.encode = encode
        self.bos_id = bos_id
        self.seed = seed
        self.batch_size = batch_size
        self._order_epoch, self._order = -1, chunks
        self.seek(LanePosition())

    def order(self, epoch: int) -> list[Chunk]:
        if self.seed is None:
            return self.chunks
        if self._order_epoch != epoch:
            self._order = list(self.chunks)
            random.Random(f"{self.seed}/lane{self.lane_id}/epoch{epoch}").shuffle(self._order)
            self._order_epoch = epoch
        return self._order

    def seek(self, position: LanePosition) -> None:
        inside = (
            position.epoch >= 0
            and 0 <= position.chunk < len(self.chunks)
            and 0 <= position.doc < self.order(position.epoch)[position.chunk].num_docs
            and position.token >= 0
        )
        if not inside:
            raise UserInputError(f"data lane {self.lane_id}: position {position} is outside this corpus")
        self.epoch, self.chunk, self.doc, self.token = position.epoch, position.chunk, position.doc, position.token
        self._texts = None  # documents of the current chunk, read lazily
        self._batch_start, self._batch = 0, []  # tokenized documents [start, start + len)

    @property
    def position(self) -> LanePosition:
        return LanePosition(self.epoch, self.chunk, self.doc, self.token)

    def _doc_tokens(self) -> list[int]:
        if not self._batch_start <= self.doc < self._batch_start + len(self._batch):
            if self._texts is None:
                self._texts = self.source.read_chunk(self.order(self.epoch)[self.chunk])
            texts = self._texts[self.doc : self.doc + self.batch_size]
            self._batch_start = self.doc
            self._batch = [[self.bos_id] + ids for ids in self.encode(texts)]
        tokens = self._batch[self.doc - self._batch_start]
        if self.token >= len(tokens):
            raise UserInputError(
                f"data lane {self.lane_id}: saved token offset {self.token} is past the end of its document "
                f"({len(tokens)} tokens); the data state belongs to another corpus or tokenizer"
            )
        return tokens

    def _next_doc(self) -> None:
        self.token = 0
        self.doc += 1
        if self.doc == self.order(self.epoch)[self.chunk].num_docs:
            self.doc, self._texts, self._batch_start, self._batch = 0, None, 0, []
            self.chunk += 1
            if self.chunk == len(self.chunks):
                self.chunk = 0
                self.epoch += 1

    def take(self, count: int) -> list[int]:
        """The next `count` tokens of the stream; the cursor then points at the following token."""
        out: list[int] = []
        while len(out) < count:
            tokens = self._doc_tokens()
            end = min(len(tokens), self.token + count - len(out))
            out += tokens[self.token : end]
            self.token = end
            if self.token == len(tokens):
                self._next_doc()
        return out


class _Progress:
    """What one `__iter__` has produced: rank rows, rows per lane, and recent row start positions."""

    def __init__(self, rows: int, lane_rows: dict[int, int], positions: dict[int, LanePosition]):
        self.rows = rows
        # history[lane]: deque of (lane row index, start position of that row); the last entry is the
        # next row to be produced (the frontier).
        self.history = {
            lane: deque([(lane_rows[lane], positions[lane])], maxlen=HISTORY_ROWS_PER_LANE + 1) for lane in lane_rows
        }


class PretrainDataset(IterableDataset):
    """Infinite stream of packed pretraining rows for one rank (see the module docstring).

    Each item is a dict of 1-D LongTensors of length `sequence_len`: `input_ids`, `labels` (= input_ids)
    and `shift_labels` (the next-token targets, `row[1:]`).
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
        self.bos_token_id = int(bos_id)
        self._tokenizer_batch_size = tokenizer_batch_size
        self._encode = make_batch_encoder(tokenizer)

        chunks = split_into_lanes_chunks(
            self.source.split_chunks(split), num_lanes, where=f"{self.source.name} ({split} split)"
        )
        if seed is not None:
            random.Random(f"{seed}/chunks").shuffle(chunks)
        self._chunks_per_lane = {lane: chunks[lane::num_lanes] for lane in range(num_lanes)}
        lanes_per_rank = num_lanes // world_size
        self.lanes = list(range(rank * lanes_per_rank, (rank + 1) * lanes_per_rank))

        # Where the next __iter__ starts (changed only by load_state_dict) ...
        self._start_positions = {lane: LanePosition() for lane in self.lanes}
        self._start_lane_rows = {lane: 0 for lane in self.lanes}
        self._start_rows = 0
        # ... and what the current one has produced.
        self._progress: _Progress | None = None

    @property
    def start_rows(self) -> int:
        """Rows of this rank already consumed where the next `__iter__` starts (> 0 after a restore)."""
        return self._start_rows

    # ---- iteration

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise UserInputError(
                "PretrainDataset: use dataloader_num_workers=0 (each worker would produce the same rows; "
                "tokenization is already parallel inside the Rust tokenizer)"
            )
        return self._rows()

    def _rows(self) -> Iterator[dict[str, torch.Tensor]]:
        lanes = []
        for lane_id in self.lanes:
            lane = _Lane(
                lane_id,
                self._chunks_per_lane[lane_id],
                self.source,
                self._encode,
                self.bos_token_id,
                self.seed,
                self._tokenizer_batch_size,
            )
            lane.seek(self._start_positions[lane_id])
            lanes.append(lane)
        progress = _Progress(self._start_rows, dict(self._start_lane_rows), dict(self._start_positions))
        self._progress = progress
        row_length = self.sequence_len + 1
        while True:
            lane = lanes[progress.rows % len(lanes)]
            tokens = lane.take(row_length)
            history = progress.history[lane.lane_id]
            history.append((history[-1][0] + 1, lane.position))
            progress.rows += 1
            row = torch.tensor(tokens, dtype=torch.long)
            yield {"input_ids": row[:-1], "labels": row[:-1].clone(), "shift_labels": row[1:]}

    # ---- resume state

    def _lane_rows_at(self, local_lane: int, rank_rows: int) -> int:
        """Rows lane `local_lane` (0-based among this rank's lanes) has given when the rank has given `rank_rows`."""
        m = len(self.lanes)

        def count_before(x):  # rank rows j < x with j % m == local_lane
            return -(-(x - local_lane) // m)

        lane_id = self.lanes[local_lane]
        return self._start_lane_rows[lane_id] + count_before(rank_rows) - count_before(self._start_rows)

    def state_dict(self, consumed_rows: int | None = None) -> dict:
        """The position after this rank's first `consumed_rows` rows (default: every row produced so far).

        `consumed_rows` counts rows of this rank since the start of training (not since the resume): the
        trainer consumed global_step x gradient_accumulation_steps x per_device_batch_size of them.
        """
        progress = self._progress
        produced = progress.rows if progress is not None else self._start_rows
        consumed = produced if consumed_rows is None else int(consumed_rows)
        if not self._start_rows <= consumed <= produced:
            raise ValueError(
                f"consumed_rows={consumed} is outside the rows this dataset produced ({self._start_rows}..{produced}); "
                "is the count per rank and since the start of training?"
            )
        lanes = {}
        for local_lane, lane_id in enumerate(self.lanes):
            lane_row = self._lane_rows_at(local_lane, consumed)
            if progress is None:
                position = self._start_positions[lane_id]
            else:
                history = progress.history[lane_id]
                offset = lane_row - history[0][0]
                if offset < 0:
                    raise ValueError(
                        f"data lane {lane_id}: row {lane_row} is older than the {HISTORY_ROWS_PER_LANE} rows remembered"
                    )
                position = history[offset][1]
            lanes[str(lane_id)] = {"rows": lane_row, **asdict(position)}
        return {
            "format": STATE_FORMAT,
            "source": self.source.fingerprint(),
            "split": self.split,
            "sequence_len": self.sequence_len,
            "num_lanes": self.num_lanes,
            "seed": self.seed,
            "saved_by": [{"rank": self.rank, "world_size": self.world_size, "lanes": self.lanes, "rows": consumed}],
            "lanes": lanes,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue, at the next `__iter__`, from a state saved by `state_dict` (or merged by `load_data_state`)."""
        if state.get("format") != STATE_FORMAT:
            raise UserInputError(f"data state: format {state.get('format')!r}, expected {STATE_FORMAT!r}")
        expected = {
            "source": self.source.fingerprint(),
            "split": self.split,
            "sequence_len": self.sequence_len,
            "num_lanes": self.num_lanes,
            "seed": self.seed,
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise UserInputError(
                    f"data state: {key} is {state.get(key)!r} but this run has {value!r}; resume with the same data settings"
                )
        saved = state["lanes"]
        missing = [lane for lane in self.lanes if str(lane) not in saved]
        if missing:
            raise UserInputError(f"data state: has no position for data lane(s) {missing} of rank {self.rank}")
        positions = {
            lane: LanePosition(**{k: v for k, v in saved[str(lane)].items() if k != "rows"}) for lane in self.lanes
        }
        lane_rows = {lane: int(saved[str(lane)]["rows"]) for lane in self.lanes}
        for lane in self.lanes:  # check the position against this corpus now, not at the first batch
            chunks = self._chunks_per_lane[lane]
            if not 0 <= positions[lane].chunk < len(chunks):
                raise UserInputError(f"data state: lane {lane} position {positions[lane]} is outside this corpus")

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
        self._start_positions, self._start_lane_rows, self._start_rows = positions, lane_rows, rows
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
) -> tuple[PretrainDataset, PretrainDataset]:
    """The training and validation datasets of one rank, sharing one opened source."""
    text_source = source if isinstance(source, TextSource) else open_text_source(source)
    common = dict(rank=rank, world_size=world_size, num_lanes=num_lanes, seed=seed)
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
