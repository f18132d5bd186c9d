"""The data lane's background thread (nanochat_hf.data.prefetch): order, errors, and stopping."""

import threading
import time

import pytest

from nanochat_hf.data.prefetch import BackgroundIterator


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_items_come_in_order_and_the_end_is_reached():
    assert list(BackgroundIterator(iter(range(100)), depth=3)) == list(range(100))


def test_an_error_in_the_producer_is_raised_at_its_item():
    def items():
        yield from range(5)
        raise RuntimeError("broken shard")

    iterator = BackgroundIterator(items(), depth=2)
    assert [next(iterator) for _ in range(5)] == list(range(5))
    with pytest.raises(RuntimeError, match="broken shard"):
        next(iterator)
    with pytest.raises(StopIteration):
        next(iterator)


def test_closing_stops_the_producer_and_runs_its_cleanup():
    cleaned = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            cleaned.set()

    iterator = BackgroundIterator(endless(), depth=4)
    assert next(iterator) == 0
    iterator.close()
    assert wait_until(cleaned.is_set)
    assert wait_until(lambda: not iterator._thread.is_alive())


def test_a_new_pass_over_the_dataset_stops_the_previous_thread(tokenizer_dir):
    from transformers import AutoTokenizer

    from nanochat_hf.data import PretrainDataset

    dataset = PretrainDataset(
        "embedded", AutoTokenizer.from_pretrained(tokenizer_dir), 32, num_lanes=2, prefetch_rows=8
    )
    first = iter(dataset)
    row = next(first)
    second = iter(dataset)
    assert wait_until(lambda: not first._thread.is_alive())
    assert next(second)["input_ids"].tolist() == row["input_ids"].tolist()  # each pass starts at the start
