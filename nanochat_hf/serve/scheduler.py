"""The generation worker: one thread that runs the chat engine on batches of queued requests.

Requests are admitted up to `max_concurrent` (running plus waiting; beyond that `submit` raises `Busy`,
which the server answers with 429). The worker takes the oldest waiting request, gathers up to
`max_batch_size - 1` more that are already waiting, and generates all of them in one
`ChatEngine.generate_batch` call, each row with its own settings and tool loop. `generate()` runs a
batch to its end, so requests that arrive meanwhile wait for the next batch (static batching).

Each request (`Job`) receives its reply's events, and then its finished reply, on an asyncio queue of the
event loop that submitted it. A job can be cancelled at any time (the client went away): a waiting job
is dropped, a running row ends at the next decoding step, and either way its admission slot is freed
at once. `stop()` ends everything for a shutdown: waiting jobs get an error, running rows end.
"""

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field


logger = logging.getLogger(__name__)


class Busy(Exception):
    """The server already holds `max_concurrent` requests."""


@dataclass
class Job:
    conversation: list[dict]
    max_new_tokens: int
    temperature: float
    top_k: int | None
    prompt_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    released: bool = False  # its admission slot has been given back
    started: bool = False  # a batch has taken it
    scheduler: "Scheduler | None" = None

    def send(self, kind: str, payload) -> None:
        """Hand ("event", ChatEvent), ("reply", AssistantReply) or ("error", message) to the request's loop."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def cancel(self) -> None:
        self.cancelled.set()
        if self.scheduler is not None:
            self.scheduler._cancelled(self)


class Scheduler:
    def __init__(self, engine, max_batch_size: int = 8, max_concurrent: int = 64, generate_kwargs: dict | None = None):
        self.engine = engine
        self.generate_kwargs = dict(generate_kwargs or {})
        self.max_batch_size = max_batch_size
        self.max_concurrent = max_concurrent
        self.waiting: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0
        self.running = 0
        self.batches = 0
        self.cancelled = 0  # requests ended early because their client went away
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._work, name="nanochat-hf-generation", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stats(self) -> dict:
        with self.lock:
            return {
                "active": self.admitted,
                "running": self.running,
                "waiting": self.admitted - self.running,
                "batches": self.batches,
                "cancelled": self.cancelled,
                "max_concurrent": self.max_concurrent,
                "max_batch_size": self.max_batch_size,
            }

    def submit(self, job: Job) -> None:
        if self.stopping.is_set():
            raise Busy("the server is shutting down")
        with self.lock:
            if self.admitted >= self.max_concurrent:
                raise Busy(
                    f"the server is busy: {self.admitted} requests in flight, at most {self.max_concurrent} "
                    "(--max-concurrent); retry later"
                )
            self.admitted += 1
        job.scheduler = self
        self.waiting.put(job)

    def _release(self, job: Job) -> None:
        with self.lock:
            if not job.released:
                job.released = True
                self.admitted -= 1
                self.running -= int(job.started)
                self.cancelled += int(job.cancelled.is_set())

    def _cancelled(self, job: Job) -> None:
        """A waiting job's slot is free at once (the worker skips it); a running one's when its row ends."""
        with self.lock:
            waiting = not job.started
        if waiting:
            self._release(job)

    def stop(self, timeout: float = 30.0) -> None:
        """End all work: waiting jobs get an error, running rows end at their next step."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout)
        self._drop_waiting()

    def _drop_waiting(self) -> None:
        while True:
            try:
                job = self.waiting.get_nowait()
            except queue.Empty:
                return
            self._release(job)
            job.send("error", "the server is shutting down")

    def _next_batch(self) -> list[Job]:
        try:
            first = self.waiting.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.max_batch_size:
            try:
                batch.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        live = []
        with self.lock:
            for job in batch:
                if not job.cancelled.is_set():
                    job.started = True
                    self.running += 1
                    live.append(job)
        for job in batch:
            if job.cancelled.is_set():
                self._release(job)
        return live

    def _work(self) -> None:
        while not self.stopping.is_set():
            batch = self._next_batch()
            if batch:
                self._run(batch)
        self._drop_waiting()

    def _run(self, batch: list[Job]) -> None:
        with self.lock:
            self.batches += 1

        def should_stop(row: int) -> bool:
            job = batch[row]
            if job.cancelled.is_set() or self.stopping.is_set():
                self._release(job)  # the row ends at this step: its slot is free now
                return True
            return False

        def on_reply(row: int, reply) -> None:
            self._release(batch[row])
            batch[row].send("reply", reply)

        try:
            self.engine.generate_batch(
                [job.conversation for job in batch],
                max_new_tokens=[job.max_new_tokens for job in batch],
                temperature=[job.temperature for job in batch],
                top_k=[job.top_k for job in batch],
                on_event=lambda row, event: batch[row].send("event", event),
                on_reply=on_reply,
                should_stop=should_stop,
                **self.generate_kwargs,
            )
        except Exception as err:  # one bad batch must not end the worker; its requests get the error
            logger.exception("generation failed")
            for job in batch:
                if not job.released:
                    self._release(job)
                    job.send("error", f"generation failed: {type(err).__name__}: {err}")
