"""What a model's training says about itself, read from `<repository>/training.json`: the file a
run training live into the model repository writes (seq2seq.publish). For GetModelMetadata,
/v1/models and the page's learning panel (/v1/training), and for the message of a call to a
task that has no version yet ("the first version is expected in about 40 s").

Whether the run is still going on: on this host the process the file names must be alive;
from another host (a shared repository) the file must have been rewritten in the last
`STALE_SECONDS`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from seq2seq import export_format as fmt

log = logging.getLogger("seq2seq.serving")
STALE_SECONDS = 600.0
# queued: waits for its turn; training: running; paused: has its first version, goes on next
ONGOING = ("queued", "training", "paused")


def _alive(status: dict) -> bool:
    if status.get("host") == socket.gethostname() and isinstance(status.get("pid"), int):
        try:
            os.kill(status["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - float(status.get("updated") or 0) < STALE_SECONDS


def duration(seconds: float) -> str:
    """'40 s', '3 min', '1 h 5 min'."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class TrainingStatus:
    """The status file of one task's repository, re-read when it changes."""

    def __init__(self, repository: str | Path):
        self.path = Path(repository) / fmt.TRAINING_FILE
        self._lock = threading.Lock()
        self._seen: tuple | None = None
        self._status: dict | None = None

    def read(self) -> dict | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._seen:
                try:
                    status = json.loads(self.path.read_text())
                    if not isinstance(status, dict):
                        raise ValueError("not a JSON object")
                except (OSError, ValueError) as err:
                    log.warning("%s cannot be read (%s): no training status", self.path, err)
                    status = None
                self._seen, self._status = key, status
            return self._status

    def summary(self) -> dict | None:
        """The run's state and progress, its latest validation and its exported versions;
        None if the repository has no training status."""
        s = self.read()
        if s is None:
            return None
        state = str(s.get("state", "unknown"))
        if state == "training" and not _alive(s):
            state = "interrupted"  # the process is gone without saying so (kill -9)
        validations = s.get("validations") or []
        step, total = int(s.get("step") or 0), int(s.get("max_steps") or 0)
        rate = s.get("steps_per_second") if state == "training" else None
        next_step = s.get("next_check_step")
        next_seconds = None
        if rate and next_step is not None:
            elapsed = max(0.0, time.time() - float(s.get("updated") or time.time()))
            next_seconds = max(0.0, (int(next_step) - step) / rate - elapsed)
        return {
            "state": state,
            "improving": state in ONGOING,
            "step": step,
            "total_steps": total,
            "steps_per_second": rate,
            "score_name": s.get("score_name") or "",
            "latest_validation": validations[-1] if validations else None,
            "versions": [
                {k: v.get(k) for k in ("version", "step", "valid_loss", "valid_score", "final")}
                | ({"test": v["test"]} if v.get("test") else {})
                for v in s.get("versions") or []
            ],
            "next_check_step": next_step if state in ONGOING else None,
            "next_check_seconds": None if next_seconds is None else round(next_seconds, 1),
            "message": s.get("message") or "",
            "updated": s.get("updated"),
        }

    def full(self) -> dict | None:
        """The summary and the curves: training loss, validations, ‖∂L/∂h_t‖ by time step."""
        s, summary = self.read(), self.summary()
        if summary is None:
            return None
        return summary | {
            "train_loss": s.get("train_loss") or [],
            "validations": s.get("validations") or [],
            "grad_norms": s.get("grad_norms") or {"steps": [], "layers": {}},
        }

    def expected(self) -> str:
        """For a call to a task that has no version yet: when one is expected."""
        s = self.summary()
        if s is None:
            return ""
        state = s["state"]
        if state == "training":
            if s["next_check_seconds"] is not None:
                return (
                    f"its training is at step {s['step']} of {s['total_steps']}; the first "
                    f"version is expected in about {duration(s['next_check_seconds'])} (at step "
                    f"{s['next_check_step']})"
                )
            first = s["next_check_step"]
            return f"its training has started: the first version comes at step {first}"
        if state == "queued":
            return f"its training is queued ({s['message']}); a first version comes in minutes"
        if state == "failed":
            return f"its training failed: {s['message']}"
        return f"its training is {state} at step {s['step']}: `make serve` resumes it"
