"""One data lane: its documents in reading order, and the two ways of cutting them into rows.

A lane reads its chunks (see `sources.py`) in order, epoch after epoch. `LaneReader` holds the cursor,
an `(epoch, chunk, doc, token)` `LanePosition`, and tokenizes the documents ahead of it in batches:
small batches right after a seek (4 documents, then 8, 16, ... up to the tokenizer batch size), so the
first row costs a few documents, not a whole batch per lane. Tokens live in flat numpy buffers (one
array and document offsets per batch, BOS first in every document), so cutting rows is slicing, never a
Python loop over tokens. The next chunk is read on a thread pool while the current one is consumed.

Two packers turn a lane's documents into rows of `row_len` = T + 1 tokens:

- `StreamPacker` (nanochat generation 1): the BOS-prefixed documents are one token stream cut into
  consecutive rows; rows start mid-document. Its state is the reader's position.
- `BestFitPacker` (nanochat generation 2, BOS-aligned best fit): a buffer of tokenized documents; each
  row is filled by repeatedly taking the *largest* buffered document that fits the remaining space; when
  none fits, the *shortest* one is cropped to fill the row exactly and the rest of it is dropped. Every
  row starts with BOS, nothing is padded, no document continues into another row. Ties go to the
  document read first, as in nanochat's list scan; the buffer is refilled to its capacity before every
  pick. Capacity is `buffer_size` (nanochat: 1000) except for the first rows of a lane: 32 documents for
  row 0, then 64, 128, ... (a fixed warm-up, so the first batch needs a few hundred documents, not
  lanes x 1000). Its state is the reader's position (the next document to enter the buffer) plus the
  buffered documents as (epoch, chunk, doc, length); on resume their tokens are read back lazily, chunk
  by chunk, when first needed (a long document can stay in the buffer for a whole run and may never be).

Both keep, per produced row, what is needed to give the state at the start of any recent row
(`state_at`), because the trainer consumes rows later than they are produced.
"""

import bisect
import heapq
import random
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from nanochat_hf.data.encoding import TOKEN_DTYPE
from nanochat_hf.errors import UserInputError


FIRST_WINDOW_DOCS = 4  # documents tokenized right after a seek; doubles per batch up to the batch size
BEST_FIT_FIRST_CAPACITY = 32  # documents buffered for a lane's first best-fit row; doubles per row
# Row starts remembered per lane; only rows prefetched beyond the consumed count are looked up (a few
# batches), so this is generous.
HISTORY_ROWS_PER_LANE = 8192

_NO_TOKENS = np.empty(0, dtype=TOKEN_DTYPE)
_NO_OFFSETS = np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class LanePosition:
    """Where a lane's next row starts: document `doc` of the `chunk`-th chunk of epoch `epoch`'s order,
    token `token` of that document's tokens (BOS included)."""

    epoch: int = 0
    chunk: int = 0
    doc: int = 0
    token: int = 0


class LaneReader:
    """A cursor over one lane's documents, tokenized ahead in flat batches (see the module docstring)."""

    def __init__(self, lane_id, chunks, source, encoder, bos_id: int, seed, max_batch: int, read_pool=None):
        self.lane_id = lane_id
        self.chunks = chunks
        self.source = source
        self.encoder = encoder
        self.bos_id = bos_id
        self.seed = seed
        self.max_batch = max_batch
        self.read_pool = read_pool
        self._orders: dict[int, list] = {}
        self._ahead = None  # (epoch, chunk, future of its texts): the chunk after the current one
        self.seek(LanePosition())

    def order(self, epoch: int) -> list:
        if self.seed is None:
            return self.chunks
        if epoch not in self._orders:
            order = list(self.chunks)
            random.Random(f"{self.seed}/lane{self.lane_id}/epoch{epoch}").shuffle(order)
            if len(self._orders) >= 2:  # the current epoch and the next one are enough
                self._orders.pop(min(self._orders))
            self._orders[epoch] = order
        return self._orders[epoch]

    def check_document(self, epoch: int, chunk: int, doc: int, token: int = 0) -> None:
        inside = epoch >= 0 and 0 <= chunk < len(self.chunks) and token >= 0
        if not (inside and 0 <= doc < self.order(epoch)[chunk].num_docs):
            raise UserInputError(
                f"data lane {self.lane_id}: position {LanePosition(epoch, chunk, doc, token)} is outside this corpus"
            )

    def seek(self, position: LanePosition) -> None:
        self.check_document(position.epoch, position.chunk, position.doc, position.token)
        self.epoch, self.chunk, self.doc, self.token = position.epoch, position.chunk, position.doc, position.token
        self._texts = None  # documents of the current chunk, read lazily
        self._token_unchecked = position.token > 0
        self._batch = FIRST_WINDOW_DOCS
        self._clear_window()

    def _clear_window(self) -> None:
        # Tokenized documents [window_doc, window_doc + len(offsets) - 1) of the current chunk.
        self._window_doc, self._tokens, self._offsets = self.doc, _NO_TOKENS, _NO_OFFSETS

    @property
    def position(self) -> LanePosition:
        return LanePosition(self.epoch, self.chunk, self.doc, self.token)

    def start_reading(self) -> None:
        """Start reading the current chunk in the background (all lanes at once before the first row)."""
        if self.read_pool is not None and self._texts is None and self._ahead is None:
            chunk = self.order(self.epoch)[self.chunk]
            self._ahead = (self.epoch, self.chunk, self.read_pool.submit(self.source.read_chunk, chunk))

    def _following(self, epoch: int, chunk: int) -> tuple[int, int]:
        return (epoch, chunk + 1) if chunk + 1 < len(self.chunks) else (epoch + 1, 0)

    def _current_texts(self) -> list[str]:
        if self._texts is None:
            ahead, self._ahead = self._ahead, None
            if ahead is not None and ahead[:2] == (self.epoch, self.chunk):
                self._texts = ahead[2].result()
            else:
                self._texts = self.source.read_chunk(self.order(self.epoch)[self.chunk])
            if self.read_pool is not None:
                epoch, chunk = self._following(self.epoch, self.chunk)
                future = self.read_pool.submit(self.source.read_chunk, self.order(epoch)[chunk])
                self._ahead = (epoch, chunk, future)
        return self._texts

    def _ensure_window(self) -> int:
        """Tokenize from the cursor's document if needed; returns the cursor's flat index in the window."""
        index = self.doc - self._window_doc
        if not 0 <= index < len(self._offsets) - 1:
            texts = self._current_texts()
            stop = min(len(texts), self.doc + self._batch)
            self._tokens, self._offsets = self.encoder.encode_flat(texts[self.doc : stop], prepend=self.bos_id)
            self._window_doc, index = self.doc, 0
            self._batch = min(self.max_batch, 2 * self._batch)
        if self._token_unchecked:
            length = int(self._offsets[index + 1] - self._offsets[index])
            if self.token >= length:
                raise UserInputError(
                    f"data lane {self.lane_id}: saved token offset {self.token} is past the end of its document "
                    f"({length} tokens); the data state belongs to another corpus or tokenizer"
                )
            self._token_unchecked = False
        return int(self._offsets[index]) + self.token

    def _move_to(self, flat_index: int) -> None:
        """Put the cursor at `flat_index` of the current window (its end = the next document)."""
        if flat_index == len(self._tokens):
            self.doc, self.token = self._window_doc + len(self._offsets) - 1, 0
            if self.doc == self.order(self.epoch)[self.chunk].num_docs:
                self.epoch, self.chunk = self._following(self.epoch, self.chunk)
                self.doc, self._texts = 0, None
                self._clear_window()
        else:
            index = int(np.searchsorted(self._offsets, flat_index, side="right")) - 1
            self.doc, self.token = self._window_doc + index, flat_index - int(self._offsets[index])

    def read(self, count: int) -> np.ndarray:
        """The next `count` tokens of the lane's stream; the cursor then points at the following token."""
        pieces = []
        while count:
            start = self._ensure_window()
            end = min(len(self._tokens), start + count)
            pieces.append(self._tokens[start:end])
            count -= end - start
            self._move_to(end)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def next_document(self) -> tuple[tuple[int, int, int], np.ndarray]:
        """((epoch, chunk, doc), tokens) of the document at the cursor (which must be at its start); advances."""
        start = self._ensure_window()
        index = self.doc - self._window_doc
        end = int(self._offsets[index + 1])
        key = (self.epoch, self.chunk, self.doc)
        tokens = self._tokens[start:end]
        self._move_to(end)
        return key, tokens

    def encode_documents(self, epoch: int, chunk: int, docs: list[int]) -> list[np.ndarray]:
        """Tokens (BOS first) of documents `docs` of a chunk, read again from the source."""
        texts = self.source.read_chunk(self.order(epoch)[chunk])
        tokens, offsets = self.encoder.encode_flat([texts[doc] for doc in docs], prepend=self.bos_id)
        return [tokens[offsets[i] : offsets[i + 1]] for i in range(len(docs))]


class StreamPacker:
    """Generation 1: consecutive rows of the lane's token stream. State: the reader's position."""

    def __init__(self, reader: LaneReader, row_len: int, state: dict):
        self.reader, self.row_len = reader, row_len
        reader.seek(_position_of(state))
        # (lane row, position at its start); the last entry is the next row to be produced (the frontier).
        self.history = deque([(int(state["rows"]), reader.position)], maxlen=HISTORY_ROWS_PER_LANE + 1)

    def take_row(self) -> np.ndarray:
        row = self.reader.read(self.row_len)
        self.history.append((self.history[-1][0] + 1, self.reader.position))
        return row

    def state_at(self, lane_row: int) -> dict:
        offset = _history_offset(self.reader.lane_id, lane_row, self.history[0][0])
        return {"rows": lane_row, **asdict(self.history[offset][1])}


class BestFitPacker:
    """Generation 2: BOS-aligned best-fit rows from a buffer of documents (see the module docstring)."""

    def __init__(self, reader: LaneReader, row_len: int, buffer_size: int, state: dict):
        self.reader, self.row_len, self.buffer_size = reader, row_len, buffer_size
        position = _position_of(state)
        if position.token:
            raise UserInputError(f"data lane {reader.lane_id}: a best-fit position starts a document (token 0)")
        reader.seek(position)
        self.rows = int(state["rows"])
        self.entries: dict[tuple, int] = {}  # buffered documents in reading order -> token count (BOS included)
        self.tokens: dict[tuple, np.ndarray] = {}  # their first row_len tokens; missing until read back
        self._by_length: dict[int, deque] = {}  # documents that fit a row, by length, oldest first
        self._lengths: list[int] = []  # the lengths present in _by_length, ascending
        self._long: list[tuple[int, tuple]] = []  # (length, key) heap of documents longer than a row
        for epoch, chunk, doc, length in sorted(state.get("buffer", [])):
            reader.check_document(epoch, chunk, doc)
            if not isinstance(length, int) or length < 1:
                raise UserInputError(f"data lane {reader.lane_id}: buffered document length {length!r} is invalid")
            self._add((epoch, chunk, doc), length, None)
        # (lane row, position at its start, documents taken by it as (key, length)), per produced row.
        self.history: deque = deque(maxlen=HISTORY_ROWS_PER_LANE)

    def capacity(self, lane_row: int) -> int:
        return min(self.buffer_size, BEST_FIT_FIRST_CAPACITY << min(lane_row, 30))

    def _add(self, key: tuple, length: int, tokens) -> None:
        self.entries[key] = length
        if tokens is not None:
            self.tokens[key] = tokens[: self.row_len].copy()  # a document never gives more than a row
        if length > self.row_len:
            heapq.heappush(self._long, (length, key))
        elif length in self._by_length:
            self._by_length[length].append(key)
        else:
            self._by_length[length] = deque([key])
            bisect.insort(self._lengths, length)

    def _pop_length(self, index: int) -> tuple[tuple, int]:
        length = self._lengths[index]
        queue = self._by_length[length]
        key = queue.popleft()
        if not queue:
            del self._by_length[length], self._lengths[index]
        return key, length

    def _take(self, remaining: int) -> tuple[tuple, int]:
        """The largest buffered document of at most `remaining` tokens, else the shortest one (to crop)."""
        index = bisect.bisect_right(self._lengths, remaining) - 1
        if index >= 0:
            return self._pop_length(index)
        if self._lengths:  # nothing fits: documents up to a row long are shorter than any longer one
            return self._pop_length(0)
        length, key = heapq.heappop(self._long)
        return key, length

    def _tokens_of(self, key: tuple) -> np.ndarray:
        if key not in self.tokens:  # buffered before a resume: read back this chunk's buffered documents
            epoch, chunk = key[:2]
            pending = [k for k in self.entries if k[:2] == (epoch, chunk) and k not in self.tokens]
            documents = self.reader.encode_documents(epoch, chunk, [k[2] for k in pending])
            for k, tokens in zip(pending, documents, strict=True):
                if len(tokens) != self.entries[k]:
                    raise UserInputError(
                        f"data lane {self.reader.lane_id}: buffered document {k} has {len(tokens)} tokens but the "
                        f"data state says {self.entries[k]}; the state belongs to another corpus or tokenizer"
                    )
                self.tokens[k] = tokens[: self.row_len].copy()
        return self.tokens[key]

    def take_row(self) -> np.ndarray:
        start, capacity = self.reader.position, self.capacity(self.rows)
        row = np.empty(self.row_len, dtype=TOKEN_DTYPE)
        taken, filled = [], 0
        while filled < self.row_len:
            while len(self.entries) < capacity:
                key, tokens = self.reader.next_document()
                self._add(key, len(tokens), tokens)
            key, length = self._take(self.row_len - filled)
            used = min(length, self.row_len - filled)  # all of it, or the crop that fills the row
            row[filled : filled + used] = self._tokens_of(key)[:used]
            filled += used
            del self.entries[key], self.tokens[key]
            taken.append((key, length))
        self.history.append((self.rows, start, taken))
        self.rows += 1
        return row

    def state_at(self, lane_row: int) -> dict:
        """The state at the start of lane row `lane_row`: the frontier, undone row by row back to it."""
        if lane_row == self.rows:
            return _best_fit_state(lane_row, self.reader.position, self.entries.items())
        oldest = self.history[0][0] if self.history else self.rows
        _history_offset(self.reader.lane_id, lane_row, oldest)
        buffered = dict(self.entries)
        for row, start, taken in reversed(self.history):
            if row < lane_row:
                break
            # Before row `row`: nothing read from its start on was buffered, and what it took was.
            start_key = (start.epoch, start.chunk, start.doc)
            buffered = {key: length for key, length in buffered.items() if key < start_key}
            buffered.update((key, length) for key, length in taken if key < start_key)
            position = start
        return _best_fit_state(lane_row, position, sorted(buffered.items()))


def _best_fit_state(lane_row: int, position: LanePosition, entries) -> dict:
    return {"rows": lane_row, **asdict(position), "buffer": [[*key, length] for key, length in entries]}


def _position_of(state: dict) -> LanePosition:
    try:
        return LanePosition(*(int(state[key]) for key in ("epoch", "chunk", "doc", "token")))
    except (KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"data state: lane entry {state!r} lacks an integer epoch/chunk/doc/token") from err


def _history_offset(lane_id, lane_row: int, oldest: int) -> int:
    if lane_row < oldest:
        raise ValueError(
            f"data lane {lane_id}: row {lane_row} is older than the {HISTORY_ROWS_PER_LANE} rows remembered"
        )
    return lane_row - oldest
