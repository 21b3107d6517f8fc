"""Dynamic batching: requests from concurrent callers merged into one model call, split back.

No TensorFlow and no gRPC here. A `Batcher` owns a queue and one worker thread per lane; a
caller `submit`s its items under a *key* (requests only share a model call when their keys are
equal: same model version and decoding options) and blocks on the returned future. The worker
takes the oldest request, waits at most `max_wait_us` after its arrival for more requests with
the same key (less once as many items are queued as its previous call answered), runs
`run_batch(key, items)` once on all their items (at most `max_batch_size`, a single larger
request runs alone), and gives each caller its own slice of the results, in order.

Over `queue_capacity` queued items, `submit` raises `Overloaded` at once (→ RESOURCE_EXHAUSTED):
a bounded queue keeps latency bounded and tells clients to back off, instead of growing memory.

A request may say when it stops being wanted (`expired`: its deadline passed, or its client went
away). Such a request is dropped before its batch runs, and a batch runs as model calls of at
most `call_items(key)` items, with the expired requests dropped between calls: a worker is never
kept on work nobody waits for longer than one bounded call.

A key whose model call cannot hold a full batch (`call_items(key) < max_batch_size`: a wide beam,
a long max_length) is *costly*. Costly batches run on at most `threads - 1` workers at once
(at least one), so that with two or more workers one is always left for the cheap requests: a
few clients sending the heaviest requests the server admits cannot hold every worker while the
many small requests behind them wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from serving.server.errors import DeadlineExceeded, Overloaded


def _default_threads() -> dict[str, int]:
    # Measured at 32 clients on 2 cores (README): a greedy translation call is long, and two at
    # once (one per core) serve +19% over one; a classification call is short, and a second
    # lane only halves the batches (one lane serves +25-35%).
    return {"translate": 2, "classify": 1}


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32  # most items (texts) in one model call
    max_wait_us: int = 2000  # longest wait for company after a request arrives, microseconds
    queue_capacity: int = 1024  # most items waiting; beyond it, requests are refused
    # Most decoding work in one translation call, in hypothesis-steps (texts × beam × max
    # length): a bigger batch runs as several calls, and a request whose deadline passes (or
    # whose client goes away) is dropped between them. 8192: the default decoding (beam 5,
    # 48 steps) fills a whole batch of 32; beam 16 × 256 steps runs 2 texts a call.
    max_call_cost: int = 8192
    # Model calls at once (worker threads): one number for every batcher, or {batcher name:
    # number} (a name not listed gets 1). With server.tf_threads 1, each call uses one core.
    threads: int | dict[str, int] = field(default_factory=_default_threads)

    def __post_init__(self):
        for name in ("max_batch_size", "queue_capacity", "max_call_cost"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(
                    f"batching.{name} must be an integer ≥ 1, got {getattr(self, name)!r}"
                )
        if not isinstance(self.max_wait_us, int) or self.max_wait_us < 0:
            raise ValueError(
                f"batching.max_wait_us must be an integer ≥ 0, got {self.max_wait_us!r}"
            )
        counts = self.threads.values() if isinstance(self.threads, dict) else [self.threads]
        if not counts or not all(type(n) is int and n >= 1 for n in counts):
            raise ValueError(
                "batching.threads must be an integer ≥ 1 or a mapping of task to integer ≥ 1 "
                f"(e.g. {{translate: 2, classify: 1}}), got {self.threads!r}"
            )

    def threads_for(self, name: str) -> int:
        """Worker threads for the batcher called `name`."""
        if isinstance(self.threads, dict):
            return self.threads.get(name, 1)
        return self.threads

    def for_batcher(self, name: str) -> BatchingOptions:
        """These options with `threads` resolved to the number for batcher `name`."""
        return replace(self, threads=self.threads_for(name))


@dataclass
class _Request:
    key: Hashable
    items: Sequence
    future: Future
    arrived: float
    expired: Callable[[], bool] | None = None


class Batcher:
    """Merges concurrent `submit` calls into batched `run_batch(key, items) -> results` calls.

    Args:
        run_batch: called on a worker thread with a key and a list of items; returns one result
            per item, in order. An exception fails every request of that batch.
        options: sizes and waits (BatchingOptions).
        on_batch: optional callback(key, n_items, n_requests, seconds) after each model call.
        name: the batcher's name (the task, in the server): picks its entry of a per-name
            `options.threads` mapping, and names its threads.
        call_items: optional key → the most items one model call may take (its cost bound);
            a batch above it runs as several calls, expired requests dropped between them.
    """

    def __init__(
        self,
        run_batch: Callable[[Hashable, list], Sequence],
        options: BatchingOptions | None = None,
        on_batch: Callable[[Hashable, int, int, float], None] | None = None,
        name: str = "default",
        call_items: Callable[[Hashable], int] | None = None,
    ):
        self.run_batch = run_batch
        self.call_items = call_items
        self.options = (options or BatchingOptions()).for_batcher(name)
        self.on_batch = on_batch
        self._queue: deque[_Request] = deque()
        self._queued_items = 0
        self._costly_running = 0  # workers on a costly batch now
        self._costly_limit = max(1, self.options.threads - 1)
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{name}-{i}", daemon=True)
            for i in range(self.options.threads)
        ]
        for t in self._threads:
            t.start()

    @property
    def queue_depth(self) -> int:
        """Items waiting (not yet in a model call)."""
        return self._queued_items

    def submit(
        self, key: Hashable, items: Sequence, expired: Callable[[], bool] | None = None
    ) -> Future:
        """Queues `items` under `key`; the future's result is their results, in order, or
        DeadlineExceeded once `expired()` says nobody waits for them any more."""
        if not items:
            raise ValueError("submit needs at least one item")
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise Overloaded("the server is shutting down")
            cap = self.options.queue_capacity
            if self._queued_items + len(items) > cap:
                raise Overloaded(
                    f"the request queue is full ({self._queued_items} texts waiting, capacity "
                    f"{cap}): retry after a short backoff"
                )
            self._queue.append(_Request(key, list(items), future, time.monotonic(), expired))
            self._queued_items += len(items)
            self._cond.notify_all()
        return future

    def __call__(self, key: Hashable, items: Sequence, timeout: float | None = None) -> list:
        """Submits and waits for the results."""
        return self.submit(key, items).result(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stops accepting requests, finishes the queued ones, then stops the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    # --- worker side ---------------------------------------------------------------------------

    def _costly(self, key: Hashable) -> bool:
        """Whether one model call for `key` holds fewer than a full batch of items."""
        return self.call_items is not None and self.call_items(key) < self.options.max_batch_size

    def _oldest_takeable(self) -> _Request | None:
        """The oldest queued request this worker may take: a costly one only while fewer than
        `_costly_limit` workers run costly batches."""
        busy = self._costly_running >= self._costly_limit
        for r in self._queue:
            if not (busy and self._costly(r.key)):
                return r
        return None

    def _take(self, free_since: float, expect: int) -> tuple[list[_Request], bool] | None:
        """Blocks until a batch is due; removes and returns its requests and whether it is
        costly (None: closed and nothing left).

        A batch is due when `expect` items with its key are queued (the size of this worker's
        previous batch: under a steady load, the callers it just answered come back), when it
        is full, or `max_wait_us` after the later of its oldest request's arrival and the moment
        this worker became free (`free_since`). So a lone caller is not kept waiting for company
        that never comes, and under load the callers just answered get that long to send their
        next request and join, instead of the batches shrinking to whatever queued meanwhile.
        `expect` 0 (no batch yet) waits for a full batch.
        """
        opts = self.options
        enough = min(expect or opts.max_batch_size, opts.max_batch_size)
        with self._cond:
            while True:
                while (first := self._oldest_takeable()) is None:
                    if self._closed and not self._queue:
                        return None
                    self._cond.wait()  # for a request, or for a costly batch to finish
                deadline = max(first.arrived, free_since) + opts.max_wait_us / 1e6
                while not self._closed and self._oldest_takeable() is first:
                    same = sum(len(r.items) for r in self._queue if r.key == first.key)
                    left = deadline - time.monotonic()
                    if same >= enough or left <= 0:
                        break
                    self._cond.wait(left)
                if self._oldest_takeable() is first:
                    break  # else another worker took it, or an older one became takeable: again
            # The oldest request always goes; others with its key join while they fit.
            batch, size, rest = [], 0, deque()
            for r in self._queue:
                fits = r.key == first.key and size + len(r.items) <= opts.max_batch_size
                if r is first or fits:
                    batch.append(r)
                    size += len(r.items)
                else:
                    rest.append(r)
            self._queue = rest
            self._queued_items -= size
            costly = self._costly(first.key)
            self._costly_running += costly
            return batch, costly

    def _work(self) -> None:
        free_since, expect = 0.0, 0
        while True:
            taken = self._take(free_since, expect)
            if taken is None:
                return
            batch, costly = taken
            try:
                live = [r for r in batch if r.future.set_running_or_notify_cancel()]
                live = _drop_expired(live)
                if not live:
                    continue
                expect = sum(len(r.items) for r in live)
                self._run(live)
                free_since = time.monotonic()
            finally:
                if costly:
                    with self._cond:
                        self._costly_running -= 1
                        self._cond.notify_all()

    def _run(self, live: list[_Request]) -> None:
        """Runs `live` requests as model calls of at most `call_items` items each, oldest first;
        each request gets its results (or the error) once its last item is answered, and one
        that expires between calls is dropped there."""
        key = live[0].key
        limit = max(1, self.call_items(key)) if self.call_items else None
        done: dict[int, list] = {id(r): [] for r in live}
        while live:
            chunk: list[tuple[_Request, int, int]] = []  # (request, first item, item count)
            room = limit if limit is not None else sum(len(r.items) for r in live)
            for r in live:
                start = len(done[id(r)])
                take = min(len(r.items) - start, room)
                if take > 0:
                    chunk.append((r, start, take))
                    room -= take
                if room == 0:
                    break
            items = [x for r, start, n in chunk for x in r.items[start : start + n]]
            began = time.perf_counter()
            try:
                results = list(self.run_batch(key, items))
                if len(results) != len(items):
                    raise RuntimeError(
                        f"run_batch returned {len(results)} results for {len(items)} items"
                    )
            except BaseException as err:  # every caller of the batch sees the failure
                for r in live:
                    r.future.set_exception(err)
                return
            if self.on_batch is not None:
                self.on_batch(key, len(items), len(chunk), time.perf_counter() - began)
            at = 0
            for r, _, n in chunk:
                done[id(r)].extend(results[at : at + n])
                at += n
            still = []
            for r in live:
                if len(done[id(r)]) == len(r.items):
                    r.future.set_result(done.pop(id(r)))
                else:
                    still.append(r)
            live = _drop_expired(still)


def _drop_expired(requests: list[_Request]) -> list[_Request]:
    """The requests still wanted; the others get DeadlineExceeded now."""
    kept = []
    for r in requests:
        if r.expired is not None and r.expired():
            r.future.set_exception(
                DeadlineExceeded("the deadline passed (or the client went away) before the answer")
            )
        else:
            kept.append(r)
    return kept
