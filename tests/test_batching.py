"""The dynamic batcher alone (no TensorFlow, no gRPC): merging, splitting, keys, waits, limits.

Tests that read the order of model calls use one worker (threads=1): with two,
calls run in whichever worker is free first.
"""

import threading
import time

import pytest

from serving.server.batching import Batcher, BatchingOptions
from serving.server.errors import Overloaded


class Recorder:
    """A model stand-in: answers item → (key, item * 10) and records each call's size."""

    def __init__(self, delay=0.0, gate=None):
        self.calls = []
        self.delay = delay
        self.gate = gate

    def __call__(self, key, items):
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((key, list(items)))
        time.sleep(self.delay)
        return [(key, x * 10) for x in items]


def submit_together(batcher, requests):
    """Submits every (key, items) from its own thread at the same moment; returns the results."""
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def one(i, key, items):
        start.wait()
        results[i] = batcher(key, items, timeout=10)

    threads = [threading.Thread(target=one, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_results_in_order():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=64, max_wait_us=200_000))
    requests = [("k", [i * 100 + j for j in range(i % 3 + 1)]) for i in range(12)]
    results = submit_together(batcher, requests)
    for (key, items), got in zip(requests, results, strict=True):
        assert got == [(key, x * 10) for x in items]
    # 24 items from 12 callers, all within the 200 ms window: far fewer calls than requests.
    assert sum(len(items) for _, items in model.calls) == 24
    assert len(model.calls) <= 3
    batcher.close()


def test_batches_never_exceed_max_batch_size_but_a_large_request_runs_whole():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=4, max_wait_us=100_000))
    results = submit_together(batcher, [("k", [i, i]) for i in range(6)] + [("k", list(range(9)))])
    assert results[-1] == [("k", x * 10) for x in range(9)]
    sizes = sorted(len(items) for _, items in model.calls)
    assert sizes[-1] == 9  # the oversized request alone
    assert all(s <= 4 for s in sizes[:-1]) and sum(sizes) == 21
    batcher.close()


def test_different_keys_never_share_a_call():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=64, max_wait_us=100_000))
    requests = [(("beam", i % 2), [i]) for i in range(10)]
    results = submit_together(batcher, requests)
    assert results == [[(key, items[0] * 10)] for key, items in requests]
    for key, items in model.calls:
        assert all(x % 2 == key[1] for x in items)
    batcher.close()


def test_a_full_batch_goes_at_once_and_a_lone_request_waits_at_most_max_wait():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=2, max_wait_us=5_000_000))
    start = time.monotonic()
    submit_together(batcher, [("k", [1]), ("k", [2])])
    assert time.monotonic() - start < 2.5  # did not sit out the 5 s window
    batcher.close()

    batcher = Batcher(Recorder(), BatchingOptions(threads=1, max_batch_size=64, max_wait_us=50_000))
    start = time.monotonic()
    assert batcher("k", [3], timeout=5) == [("k", 30)]
    waited = time.monotonic() - start
    assert 0.045 <= waited < 1.0
    batcher.close()


def test_over_capacity_is_refused_at_once_and_nothing_queued_is_lost():
    gate = threading.Event()
    model = Recorder(gate=gate)
    batcher = Batcher(
        model, BatchingOptions(threads=1, max_batch_size=2, max_wait_us=0, queue_capacity=3)
    )
    running = batcher.submit("k", [0])  # taken by the worker, which blocks on the gate
    deadline = time.monotonic() + 5
    while batcher.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = [batcher.submit("k", [1, 2]), batcher.submit("k", [3])]
    assert batcher.queue_depth == 3
    with pytest.raises(Overloaded, match="queue is full"):
        batcher.submit("k", [4])
    gate.set()
    assert running.result(5) == [("k", 0)]
    assert [f.result(5) for f in queued] == [[("k", 10), ("k", 20)], [("k", 30)]]
    assert batcher.submit("k", [5]).result(5) == [("k", 50)]  # room again
    batcher.close()


def test_a_failing_model_call_fails_only_its_own_requests():
    def run(key, items):
        if key == "bad":
            raise RuntimeError("model exploded")
        return items

    batcher = Batcher(run, BatchingOptions(threads=1, max_wait_us=0))
    with pytest.raises(RuntimeError, match="model exploded"):
        batcher("bad", [1], timeout=5)
    assert batcher("good", [2], timeout=5) == [2]
    wrong = Batcher(lambda key, items: items[:-1], BatchingOptions(threads=1, max_wait_us=0))
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        wrong("k", [1, 2], timeout=5)
    batcher.close()
    wrong.close()


def test_cancelled_requests_are_skipped_and_close_drains_the_queue():
    gate = threading.Event()
    model = Recorder(gate=gate)
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=1, max_wait_us=0))
    first = batcher.submit("k", [1])
    deadline = time.monotonic() + 5
    while batcher.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    dropped, kept = batcher.submit("k", [2]), batcher.submit("k", [3])
    assert dropped.cancel()
    gate.set()
    batcher.close()
    assert first.result(1) == [("k", 10)] and kept.result(1) == [("k", 30)]
    assert [items for _, items in model.calls] == [[1], [3]]
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit("k", [4])


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_batch_size=0), "max_batch_size"),
        (dict(queue_capacity=-1), "queue_capacity"),
        (dict(max_wait_us=-5), "max_wait_us"),
        (dict(threads=0), "threads"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        BatchingOptions(**options)


def test_two_worker_threads_run_batches_concurrently():
    gate = threading.Barrier(2, timeout=5)  # both calls must be inside the model at once

    def run(key, items):
        gate.wait()
        return items

    batcher = Batcher(run, BatchingOptions(max_batch_size=1, max_wait_us=0, threads=2))
    a, b = batcher.submit("k", [1]), batcher.submit("k", [2])
    assert a.result(5) == [1] and b.result(5) == [2]
    batcher.close()


def test_after_a_batch_a_worker_goes_as_soon_as_as_many_items_are_queued_again():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=64, max_wait_us=300_000))
    # No batch yet: a lone request waits the whole window for company.
    start = time.monotonic()
    assert batcher("k", [1], timeout=5) == [("k", 10)]
    assert time.monotonic() - start >= 0.29
    # The worker answered 1 item: the next request (2 items) goes at once.
    start = time.monotonic()
    assert batcher("k", [2, 3], timeout=5) == [("k", 20), ("k", 30)]
    assert time.monotonic() - start < 0.2
    # It answered 2 items: one alone waits for a second, and both go together when it comes.
    start = time.monotonic()
    first = batcher.submit("k", [4])
    time.sleep(0.1)
    second = batcher.submit("k", [5])
    assert first.result(5) == [("k", 40)] and second.result(5) == [("k", 50)]
    assert 0.09 <= time.monotonic() - start < 0.25
    assert [items for _, items in model.calls] == [[1], [2, 3], [4, 5]]
    batcher.close()


def test_threads_can_be_given_per_batcher_name():
    options = BatchingOptions(threads={"translate": 2, "classify": 1})
    two = Batcher(lambda key, items: items, options, name="translate")
    one = Batcher(lambda key, items: items, options, name="classify")
    other = Batcher(lambda key, items: items, options, name="unlisted")
    assert [len(b._threads) for b in (two, one, other)] == [2, 1, 1]
    assert two.options.threads == 2 and one("k", [7], timeout=5) == [7]
    for b in (two, one, other):
        b.close()


def test_a_big_batch_runs_as_calls_of_bounded_size_with_results_in_order():
    model = Recorder()
    batcher = Batcher(model, BatchingOptions(threads=1, max_wait_us=0), call_items=lambda key: 2)
    try:
        assert batcher("k", [1, 2, 3, 4, 5], timeout=10) == [("k", x * 10) for x in (1, 2, 3, 4, 5)]
        assert [items for _, items in model.calls] == [[1, 2], [3, 4], [5]]
    finally:
        batcher.close()


def test_an_expired_request_is_dropped_from_the_queue_unrun():
    from serving.server.errors import DeadlineExceeded

    gate = threading.Event()
    model = Recorder(gate=gate)
    batcher = Batcher(model, BatchingOptions(threads=1, max_batch_size=1, max_wait_us=0))
    try:
        first = batcher.submit("k", [1])  # the worker takes it and waits on the gate
        time.sleep(0.1)
        gone = batcher.submit("k", [2], expired=lambda: True)  # e.g. its client went away
        kept = batcher.submit("k", [3], expired=lambda: False)
        gate.set()
        assert first.result(5) == [("k", 10)] and kept.result(5) == [("k", 30)]
        with pytest.raises(DeadlineExceeded):
            gone.result(5)
        assert [items for _, items in model.calls] == [[1], [3]]  # 2 never reached the model
    finally:
        batcher.close()


def test_a_running_request_that_expires_stops_at_the_next_call_and_frees_the_worker():
    from serving.server.errors import DeadlineExceeded

    model = Recorder(delay=0.05)
    batcher = Batcher(model, BatchingOptions(threads=1, max_wait_us=0), call_items=lambda key: 1)
    try:
        deadline = time.monotonic() + 0.12
        big = batcher.submit("k", list(range(100)), expired=lambda: time.monotonic() > deadline)
        with pytest.raises(DeadlineExceeded):
            big.result(5)
        ran = len(model.calls)
        assert 2 <= ran <= 4  # ~0.12 s of 0.05 s calls, not the 100 calls (5 s) it asked for
        t0 = time.monotonic()
        assert batcher("k", [7], timeout=5) == [("k", 70)]  # the worker is free at once
        assert time.monotonic() - t0 < 0.5
    finally:
        batcher.close()


def test_costly_calls_leave_one_worker_for_the_cheap_requests():
    gate = threading.Event()
    started = []

    def model(key, items):
        started.append(key)
        if key.startswith("heavy"):
            gate.wait(10)  # a long, costly call
        return [x * 10 for x in items]

    # "heavy…": one item per call (a call cannot hold a full batch): costly. Two keys, as two
    # clients asking for different decodings, so that two workers could take one each.
    batcher = Batcher(
        model,
        BatchingOptions(threads=2, max_wait_us=0),
        call_items=lambda key: 1 if key.startswith("heavy") else 32,
    )
    try:
        a = batcher.submit("heavy-a", [1, 2])
        b = batcher.submit("heavy-b", [3])
        time.sleep(0.1)
        t0 = time.monotonic()
        assert batcher("light", [5], timeout=2) == [50]  # answered while a costly call runs
        assert time.monotonic() - t0 < 0.5
        assert started == ["heavy-a", "light"]  # the second costly request waits for the first
        gate.set()
        assert a.result(5) == [10, 20] and b.result(5) == [30]
    finally:
        gate.set()
        batcher.close()


def test_with_one_worker_costly_requests_still_run():
    batcher = Batcher(
        lambda key, items: items, BatchingOptions(threads=1, max_wait_us=0), call_items=lambda k: 1
    )
    try:
        futures = [batcher.submit("heavy", [i, i + 1]) for i in range(3)]
        assert [f.result(5) for f in futures] == [[0, 1], [1, 2], [2, 3]]
        assert batcher("light", [9], timeout=5) == [9]
    finally:
        batcher.close()
