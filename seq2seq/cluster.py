"""Which worker this process is, read from TF_CONFIG (no TensorFlow import: low-level modules
such as `seq2seq.files` use it too)."""

from __future__ import annotations

import json
import os


def _tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG", "{}"))


def num_workers() -> int:
    """Workers and chief named in TF_CONFIG (1 without it): more than 1 means a cluster."""
    cluster = _tf_config().get("cluster", {})
    return max(len(cluster.get("worker", [])) + len(cluster.get("chief", [])), 1)


def worker_info() -> tuple[int, int]:
    """(this worker's index, number of workers) from TF_CONFIG; (0, 1) without it."""
    config = _tf_config()
    workers = len(config.get("cluster", {}).get("worker", [])) or 1
    return int(config.get("task", {}).get("index", 0)), workers
