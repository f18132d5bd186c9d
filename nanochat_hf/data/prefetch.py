"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

The data lane's work is reading parquet (pyarrow) and tokenizing (Rust), both of which release the GIL,
so a thread overlaps it with the training step without worker processes (which would each need their
own copy of the resumable position). Items come out in the producer's order; an exception in the
producer is raised in the consumer at the item where it happened.
"""

import queue
import threading


_END = object()
_POLL_SECONDS = 0.1


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class BackgroundIterator:
    """`iter(BackgroundIterator(items, depth))` yields `items` while a daemon thread keeps `depth` ready.

    `close()` (also called when the iterator is garbage-collected) stops the thread at its next item.
    """

    def __init__(self, items, depth: int, name: str = "prefetch"):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=_produce, args=(items, self._queue, self._stop), name=name, daemon=True)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._done = True

    def __del__(self):
        self._stop.set()


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _produce(items, out: queue.Queue, stop: threading.Event) -> None:
    # Holds no reference to the BackgroundIterator, so dropping that one stops this thread.
    iterator = iter(items)
    try:
        for item in iterator:
            if not _put(out, item, stop):
                return
        _put(out, _END, stop)
    except BaseException as error:  # handed to the consumer, which re-raises it
        _put(out, _Failure(error), stop)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # runs the generator's cleanup (its thread pools) in this thread
