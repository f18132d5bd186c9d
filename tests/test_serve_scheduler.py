"""The generation worker's bookkeeping: admission, cancellation of waiting and running requests, batches."""

import asyncio

import pytest
from serve_helpers import tiny_engine

from nanochat_hf.serve.scheduler import Busy, Job, Scheduler


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("scheduler") / "model")


def job(loop, text="hi", max_new_tokens=6):
    conversation = [{"role": "user", "content": text}]
    return Job(conversation, max_new_tokens, temperature=0, top_k=None, prompt_tokens=0, loop=loop)


def drain(loop, job) -> list:
    items = []
    while not job.events.empty():
        items.append(loop.run_until_complete(job.events.get()))
    return items


def test_admission_limit_and_a_cancelled_waiting_request_frees_its_slot_at_once(engine):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(engine, max_batch_size=4, max_concurrent=2)  # not started: requests stay waiting
    first, second = job(loop), job(loop)
    scheduler.submit(first)
    scheduler.submit(second)
    with pytest.raises(Busy, match="2 requests in flight, at most 2"):
        scheduler.submit(job(loop))
    second.cancel()
    assert scheduler.stats()["active"] == 1 and scheduler.stats()["cancelled"] == 1
    scheduler.submit(job(loop))  # the freed slot is usable
    loop.close()


def test_waiting_requests_are_generated_together_and_cancelled_ones_skipped(engine):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(engine, max_batch_size=8, max_concurrent=8)
    jobs = [job(loop, f"hello {i}") for i in range(3)]
    for each in jobs:
        scheduler.submit(each)
    jobs[1].cancel()
    batch = scheduler._next_batch()
    assert batch == [jobs[0], jobs[2]]
    scheduler._run(batch)
    assert scheduler.stats() | {"batches": 1, "active": 0, "running": 0} == scheduler.stats()
    for each in (jobs[0], jobs[2]):
        loop.run_until_complete(asyncio.sleep(0))  # let the thread-safe callbacks run
        items = drain(loop, each)
        kinds = [kind for kind, _ in items]
        assert kinds[-1] == "reply" and set(kinds[:-1]) <= {"event"}
        expected = engine.generate(each.conversation, temperature=0, max_new_tokens=6)
        assert items[-1][1].token_ids == expected.token_ids
    assert drain(loop, jobs[1]) == []
    loop.close()


def test_stop_answers_waiting_requests_with_an_error(engine):
    loop = asyncio.new_event_loop()
    scheduler = Scheduler(engine)
    waiting = job(loop)
    scheduler.submit(waiting)
    scheduler.stop()
    loop.run_until_complete(asyncio.sleep(0))
    assert drain(loop, waiting) == [("error", "the server is shutting down")]
    with pytest.raises(Busy, match="shutting down"):
        scheduler.submit(job(loop))
    loop.close()
