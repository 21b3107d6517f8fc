"""The version manager: which exported versions of each task are loaded, and for how long.

TF Serving splits serving into a *source* (what versions exist on disk) and a *manager* (which
of them to load, when to let go of one): this module is both for a TF-Serving-style repository
`<model_dir>/<task>/<version>/`, and the predictor (serving.server.predictor) only asks it for a
version to run a request on. No gRPC here.

- Which versions are served: the version policy (`serving.server.versions`: the newest by
  default, the latest N, or specific ones) plus every version a label names. A label pins its
  version: a newer export that pushes it out of the latest-N window does not retire it, so
  requests naming the label keep their answers until the label is moved.
- Loading: a version is loaded (and warmed up) once its folder has been unchanged for one poll,
  before the version it replaces is let go; one that fails to load is skipped until its files
  change, and the next older one is tried in its place.
- Letting go: a version no longer wanted is retired, and freed once the requests holding it
  (queued or running) are answered: `acquire` / `release` count them.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from seq2seq import export_format as fmt
from serving.server.errors import TASKS, InvalidRequest, ModelUnavailable, VersionNotFound
from serving.server.learning import TrainingStatus
from serving.server.versions import VersionPolicy, check_labels

log = logging.getLogger("seq2seq.serving")


def _signature(path: Path) -> tuple:
    """(files, bytes, newest mtime) of a folder: it changes while the folder is being written."""
    files = size = newest = 0
    for f in path.rglob("*"):
        st = f.stat()
        files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return files, size, newest


class Served:
    """A loaded version and the number of requests holding it (queued or running)."""

    def __init__(self, model):
        self.model = model
        self.in_flight = 0
        self.retired = False


class NullMetrics:
    """What the manager reports to metrics; this one records nothing."""

    def model_loaded(self, task: str, version: int) -> None: ...

    def reload(self, task: str, ok: bool) -> None: ...


def _load_export(path: Path, task: str):
    from seq2seq.inference import ExportedModel  # TensorFlow: only once something is loaded

    model = ExportedModel(path, task)
    model.warm_up()
    return model


class VersionManager:
    """Loads, serves and lets go of the versions under `model_dir`.

    Args:
        model_dir: the repository root (holding translate/ and classify/).
        policies: {task: VersionPolicy} (default: the newest version of each).
        labels: {task: {label: version}}; each label's version is served whatever the policy
            says; ValueError at start if one points at a version that cannot be served.
        metrics: an object with NullMetrics's methods.
        on_change: called (no arguments) after a version was loaded or freed (the memory budget
            follows the models this way).
        load: (path, task) → a loaded, warmed-up model with `.version`, `.task` and `release()`
            (default: seq2seq.inference.ExportedModel).
        keep_intermediate: intermediate versions of a live training run kept on disk (`prune`);
            0: none is deleted.
        retire_seconds: how long after a newer version arrives the version it replaced is
            still served to requests that name it (replicas of one repository load a new version
            seconds apart; meanwhile every one of them answers for the old one). 0: at once.
    """

    def __init__(
        self,
        model_dir: str | Path,
        policies: dict[str, VersionPolicy] | None = None,
        labels: dict[str, dict[str, int]] | None = None,
        metrics=None,
        on_change: Callable[[], None] | None = None,
        load: Callable[[Path, str], object] = _load_export,
        keep_intermediate: int = 0,
        retire_seconds: float = 0.0,
    ):
        self.model_dir = Path(model_dir)
        self.keep_intermediate = keep_intermediate
        self.retire_seconds = retire_seconds
        self._retire_logged: set[tuple[str, int]] = set()
        self.training = {task: TrainingStatus(self.model_dir / task) for task in TASKS}
        self.metrics = metrics or NullMetrics()
        self._on_change = on_change
        self._load_model = load
        self._lock = threading.Lock()  # the served versions and labels
        self._refreshing = threading.Lock()  # one refresh at a time (watcher, config change)
        self._policies = {task: VersionPolicy() for task in TASKS} | (policies or {})
        self._labels: dict[str, dict[str, int]] = {task: {} for task in TASKS} | (labels or {})
        self._served: dict[str, dict[int, Served]] = {task: {} for task in TASKS}
        self._pending: dict[tuple[str, int], tuple] = {}  # (task, version) → signature seen once
        self._failed: dict[tuple[str, int], tuple] = {}  # (task, version) → signature that failed
        for task in TASKS:
            self.refresh(task, wait_until_stable=False)
        check_labels(self._labels, self.served_versions(), self._policies)

    # --- what is served -----------------------------------------------------------------------

    @property
    def models(self) -> dict:
        """The newest version served of each task (what a request naming none gets)."""
        with self._lock:
            return {
                task: served[max(served)].model for task, served in self._served.items() if served
            }

    def served_versions(self) -> dict[str, list[int]]:
        """{task: the versions served, newest first}."""
        with self._lock:
            return {task: sorted(served, reverse=True) for task, served in self._served.items()}

    def labels(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {task: dict(names) for task, names in self._labels.items()}

    def described(self, task: str | None = None) -> list[tuple[str, object, list[str], bool]]:
        """(task, model, its labels, whether it is the default) of every version served,
        newest first per task."""
        with self._lock:
            found = []
            for t in TASKS:
                if task not in (None, t):
                    continue
                served = self._served[t]
                for version, s in sorted(served.items(), reverse=True):
                    names = sorted(k for k, v in self._labels[t].items() if v == version)
                    found.append((t, s.model, names, version == max(served)))
            return found

    # --- requests hold a version ----------------------------------------------------------------

    def acquire(self, task: str, version: int | None = None, label: str | None = None) -> Served:
        """The version a request asked for (by number or label; neither: the newest), held
        until `release`. ModelUnavailable / VersionNotFound / InvalidRequest otherwise."""
        with self._lock:
            served = self._served.get(task)
            if not served:
                expected = self.training[task].expected()
                raise ModelUnavailable(
                    f"no {task} model is loaded yet: {expected}"
                    if expected
                    else f"no {task} model is loaded: export one into {self.model_dir / task}/"
                    f"<version>/ (make export-{task}); the server picks it up"
                )
            have = ", ".join(map(str, sorted(served, reverse=True)))
            if label:
                names = self._labels.get(task, {})
                if version is not None:
                    raise InvalidRequest(
                        "give model_version or model_version_label, not both "
                        f"(got {version} and {label!r})"
                    )
                if label not in names:
                    known = ", ".join(f"{k}={v}" for k, v in sorted(names.items())) or "none"
                    raise VersionNotFound(f"no {task} version label {label!r} (labels: {known})")
                version = names[label]
            chosen = served[max(served)] if version is None else served.get(version)
            if chosen is not None:
                chosen.in_flight += 1
                return chosen
        what = f"version {version}" + (f" (label {label!r})" if label else "")
        if self._coming(task, version):
            # Behind the other replicas of a shared repository: they may serve it already, and
            # this one will in a moment. UNAVAILABLE is the status a proxy (and a client)
            # retries, so a request pinned to a new version is answered by whichever replica
            # has it, never refused by one that is behind (a rolling update).
            raise ModelUnavailable(
                f"{task} model {what} is in the repository but not loaded here yet (serving "
                f"versions {have}): retry in a few seconds"
            )
        raise VersionNotFound(f"{task} model {what} is not loaded (serving versions {have})")

    def _coming(self, task: str, version: int) -> bool:
        """Whether `version` of `task` is complete on disk, wanted by the policy or a label, and
        not known to be broken: the watcher loads it at its next poll."""
        if version in self._failed_versions(task):
            return False
        on_disk = fmt.versions(self.model_dir / task)
        if version not in on_disk:
            return False
        with self._lock:
            policy, labels = self._policies[task], {task: dict(self._labels.get(task, {}))}
        return version in self._wanted(task, policy, on_disk, labels)

    def _failed_versions(self, task: str) -> set[int]:
        return {v for (t, v) in list(self._failed) if t == task}

    def release(self, served: Served) -> None:
        with self._lock:
            served.in_flight -= 1
            free = served.retired and served.in_flight == 0
        if free:
            self._free(served)

    # --- versions -------------------------------------------------------------------------------

    def _wanted(self, task: str, policy: VersionPolicy, available: list[int], labels) -> list[int]:
        """What `policy` and the labels of `task` serve among `available` versions."""
        pinned = set(labels.get(task, {}).values())
        return sorted(set(policy.wanted(available)) | (pinned & set(available)), reverse=True)

    def set_versions(self, policies: dict[str, VersionPolicy], labels) -> None:
        """Applies a new version policy and labels (a changed config file, read live): loads
        what they now want, then checks the labels against what is served. ValueError (and the
        labels unchanged) if a label points at a version that cannot be served; the versions
        loaded for the new policy stay."""
        policies = {task: VersionPolicy() for task in TASKS} | policies
        labels = {task: {} for task in TASKS} | labels
        # first against what would be served of the complete versions on disk (known broken
        # ones left out), so that a refused change loads and lets go of nothing
        would = {}
        for task in TASKS:
            on_disk = [
                v for v in fmt.versions(self.model_dir / task) if (task, v) not in self._failed
            ]
            would[task] = self._wanted(task, policies[task], on_disk, labels)
        check_labels(labels, would, policies)
        with self._refreshing:
            self._policies = policies
            with self._lock:
                old, self._labels = self._labels, labels
        for task in TASKS:
            self.refresh(task, wait_until_stable=False)
        try:
            check_labels(labels, self.served_versions(), self._policies)  # a version failed
        except ValueError:
            with self._lock:
                self._labels = old
            raise

    def refresh(self, task: str, wait_until_stable: bool = True) -> int | None:
        """Loads the versions of `task` that its policy and labels want and lets go of the
        others.

        Returns the newest version now served (None: none). The policy's candidates are taken
        newest first: a version that fails to load is logged and skipped until its files
        change, and the next older one is tried in its place (so a broken newest version does
        not leave the task unserved); with `wait_until_stable`, a version not yet seen unchanged
        for one poll is left for the next. Versions a label names are served too, whatever the
        policy says. Served versions are let go only once what replaces them is loaded.
        """
        with self._refreshing:
            policy = self._policies[task]
            with self._lock:
                current = dict(self._served[task])
                pinned = set(self._labels.get(task, {}).values())
            chosen: list[int] = []
            by_policy = 0
            on_disk = fmt.versions(self.model_dir / task)
            retiring = self._retiring(task, policy, on_disk)
            for candidate in reversed(on_disk):
                wanted = policy.specific is None or candidate in policy.specific
                if policy.latest is not None and by_policy >= policy.latest:
                    wanted = False
                if not wanted and candidate not in pinned and candidate != retiring:
                    continue
                if candidate in current or self._load(task, candidate, wait_until_stable):
                    chosen.append(candidate)
                    by_policy += wanted
            if chosen:  # nothing loadable: what is served stays
                for version, served in current.items():
                    if version not in chosen:
                        with self._lock:
                            del self._served[task][version]
                        log.info("%s: version %d is no longer served", task, version)
                        self._retire(served)
            models = self.models
            if task not in models:
                return None
            # the version a request naming none gets (loads go newest first: an older version
            # kept for a label or a roll is loaded after it)
            self.metrics.model_loaded(task, models[task].version)
            return models[task].version

    def _retiring(self, task: str, policy: VersionPolicy, on_disk: list[int]) -> int | None:
        """The version the newest one replaced (under `latest: N`, the one just past the N),
        while the newest was published less than `retire_seconds` ago: still served to requests
        that name it. The clock is the newest version's arrival in the repository (its folder's
        ctime, set when it was renamed into place), the same for every replica of a shared
        repository, so they all stop serving the old version at the same moment, whenever each
        loaded the new one (or started)."""
        if self.retire_seconds <= 0 or policy.latest is None or len(on_disk) <= policy.latest:
            return None
        try:
            published = (self.model_dir / task / str(on_disk[-1])).stat().st_ctime
        except OSError:
            return None
        left = published + self.retire_seconds - time.time()
        if left <= 0:
            return None
        version = on_disk[-1 - policy.latest]
        if (task, version) not in self._retire_logged:
            self._retire_logged.add((task, version))
            log.info(
                "%s: version %d replaced by %d; still served %.0f s more to requests naming it",
                task,
                version,
                on_disk[-1],
                left,
            )
        return version

    def prune(self, task: str) -> list[int]:
        """Deletes the intermediate versions of a live training run (metadata `training.final`
        false) older than the newest `keep_intermediate` of them, unless a label names one or
        it is served. Final versions and versions exported by hand are never touched. Each is
        renamed away first (a reader never sees half a folder), then removed. Returns them."""
        if self.keep_intermediate <= 0:
            return []
        repository = self.model_dir / task
        with self._lock:
            keep = set(self._served[task]) | set(self._labels.get(task, {}).values())
        intermediate = []
        for version in fmt.versions(repository):
            try:
                meta = json.loads((repository / str(version) / fmt.ASSETS / fmt.METADATA_FILE)
                                  .read_text())  # fmt: skip
            except (OSError, ValueError):
                continue
            training = meta.get("training") if isinstance(meta, dict) else None
            if isinstance(training, dict) and training.get("final") is False:
                intermediate.append(version)
        deleted = []
        for version in intermediate[: -self.keep_intermediate]:
            if version in keep:
                continue
            gone = repository / f".deleting-{version}-{os.getpid()}"
            try:
                (repository / str(version)).rename(gone)
            except OSError:
                continue  # another replica got there first
            shutil.rmtree(gone, ignore_errors=True)
            deleted.append(version)
        if deleted:
            log.info(
                "%s: deleted intermediate versions %s (models.keep_intermediate %d)",
                task,
                ", ".join(map(str, deleted)),
                self.keep_intermediate,
            )
        return deleted

    def _load(self, task: str, version: int, wait_until_stable: bool) -> bool:
        path = self.model_dir / task / str(version)
        try:
            signature = _signature(path)
        except OSError:  # removed while we looked
            return False
        if self._failed.get((task, version)) == signature:
            return False
        if wait_until_stable and self._pending.get((task, version)) != signature:
            self._pending[(task, version)] = signature  # load it at the next poll if unchanged
            return False
        self._pending.pop((task, version), None)
        try:
            model = self._load_model(path, task)
        except Exception as err:
            self._failed[(task, version)] = signature
            log.error("%s version %d in %s cannot be loaded, skipped: %s", task, version, path, err)
            self.metrics.reload(task, ok=False)
            return False
        with self._lock:
            self._served[task][version] = Served(model)
        log.info("%s: now serving version %d", task, version)
        self.metrics.reload(task, ok=True)
        self._changed()
        return True

    def _retire(self, served: Served) -> None:
        with self._lock:
            served.retired = True
            free = served.in_flight == 0
        if free:
            self._free(served)

    def _free(self, served: Served) -> None:
        log.info("released %s version %d", served.model.task, served.model.version)
        served.model.release()
        gc.collect()
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a broken observer must not stop a load or a release
                log.exception("reacting to a model load or release failed")

    # --- the watcher ----------------------------------------------------------------------------

    def watch(self, poll_seconds: float, stop: threading.Event, on_poll=None) -> threading.Thread:
        """Starts a thread that, every `poll_seconds` until `stop` is set, calls `on_poll` (the
        server re-reads its config file there) and refreshes every task."""

        def run() -> None:
            while not stop.wait(poll_seconds):
                if on_poll is not None:
                    try:
                        on_poll()
                    except Exception:  # the watcher must survive anything
                        log.exception("reading the serving config again failed")
                for task in TASKS:
                    try:
                        self.refresh(task)
                        self.prune(task)
                    except Exception:  # ... and anything the file system does
                        log.exception("looking for new %s versions failed", task)

        thread = threading.Thread(target=run, name="model-watcher", daemon=True)
        thread.start()
        return thread
