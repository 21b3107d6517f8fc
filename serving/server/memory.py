"""The server's memory budget: new requests are refused while its resident memory is over it.

No TensorFlow here. `MemoryBudget` samples the process's RSS (VmRSS) every 50 ms in a thread;
while it is above the budget, `check()` raises Overloaded (→ RESOURCE_EXHAUSTED, "retry after a
short backoff") for every new request, the requests already admitted finish, and the crossing is
logged (one line per 10 s at most) with a garbage collection and a `malloc_trim` to hand freed
memory back (at most once per 10 s: a collection holds the interpreter a while). What a request
may cost is bounded before it is admitted (limits.max_request_cost, batching.max_call_cost);
the budget is the last line, for what those bounds do not foresee.

`server.memory_budget_mib`: a number of MiB; 0 (the default) for *auto*, 1.5 × the RSS once the
models are loaded and warmed up (room for a reload beside them and the calls' working memory:
measured in docs/results.md), set again after every load and release of a version; -1 for none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import threading
import time
from collections.abc import Callable

from serving.server.errors import Overloaded

log = logging.getLogger("seq2seq.serving")
MiB = 1 << 20
AUTO_HEADROOM = 1.5  # auto budget: this × the RSS with the served versions loaded


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of process `pid` (this one by default), in bytes; 0 if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _malloc_trim() -> None:
    """Hands the C heap's free pages back to the system (glibc only; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryBudget:
    """Refuses new requests while the process's RSS is over `budget_mib`.

    Args:
        budget_mib: the budget in MiB; 0: auto (see `loaded`); -1: none (check never refuses).
        rss: a function returning the RSS in bytes (tests give a fake).
        every: seconds between samples.
    """

    def __init__(
        self, budget_mib: int = 0, rss: Callable[[], int] = rss_bytes, every: float = 0.05
    ):
        if not isinstance(budget_mib, int) or budget_mib < -1:
            raise ValueError(
                f"server.memory_budget_mib must be -1 (none), 0 (auto) or MiB, got {budget_mib!r}"
            )
        self.auto, self.none = budget_mib == 0, budget_mib == -1
        self.budget = 0 if budget_mib <= 0 else budget_mib * MiB  # 0: none (yet)
        self._rss, self._every = rss, every
        self._now = rss()
        self._over_since: float | None = None
        self._logged = float("-inf")
        self._trimmed = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False

    @property
    def budget_mib(self) -> int:
        """The budget in force, MiB (0: none)."""
        return self.budget // MiB

    @property
    def rss_mib(self) -> float:
        return self._now / MiB

    def models_changed(self) -> None:
        """After a version was loaded or let go (once started): an auto budget follows the
        models, 1.5 × the RSS now (freed heap handed back first, so that letting go of a
        version lowers it). A server that starts with one task's model and loads the other
        later, or a bigger version, is not left over a budget set for less."""
        if not self._started:
            return  # the loads at start: `start` counts them all at once
        if self.auto:
            _malloc_trim()
        self._now = self._rss()
        if self.auto:
            self.budget = int(AUTO_HEADROOM * self._now) // MiB * MiB

    def start(self, models_loaded: bool = True) -> MemoryBudget:
        """Starts sampling; `models_loaded`: the server's models are in memory now (an auto
        budget is set from them; else at the first load)."""
        self._started = True
        if models_loaded:
            self.models_changed()
        if self._thread is None and not self.none:
            self._thread = threading.Thread(target=self._sample, name="memory", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def over(self) -> bool:
        return 0 < self.budget < self._now

    def check(self) -> None:
        """Overloaded when the RSS is over the budget."""
        if self.over():
            raise Overloaded(
                f"the server's memory ({self._now / MiB:,.0f} MiB) is over its budget "
                f"(server.memory_budget_mib {self.budget_mib:,}): retry after a short backoff"
            )

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            self._now = self._rss()
            if not self.over():
                if self._over_since is not None:
                    log.info(
                        "memory back under its budget (%.0f MiB ≤ %d MiB) after %.1f s: "
                        "taking requests again",
                        self._now / MiB,
                        self.budget_mib,
                        time.monotonic() - self._over_since,
                    )
                self._over_since = None
                continue
            if self._over_since is None:
                self._over_since = time.monotonic()
                if self._over_since - self._trimmed >= 10.0:  # it holds the GIL a while
                    self._trimmed = self._over_since
                    gc.collect()
                    _malloc_trim()
            if time.monotonic() - self._logged >= 10.0:
                self._logged = time.monotonic()
                log.warning(
                    "memory %.0f MiB is over its budget %d MiB (pid %d): new requests are "
                    "refused (RESOURCE_EXHAUSTED) until it is back under",
                    self._now / MiB,
                    self.budget_mib,
                    os.getpid(),
                )
