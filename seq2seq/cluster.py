"""Which worker this process is, read from TF_CONFIG (no TensorFlow import: low-level modules
such as `seq2seq.files` use it too)."""

from __future__ import annotations

import json
import os


def cluster_spec() -> dict:
    """TF_CONFIG's `cluster` mapping ({} when unset)."""
    return json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})


def num_workers() -> int:
    """Workers and chief named in TF_CONFIG (1 without it)."""
    cluster = cluster_spec()
    return max(len(cluster.get("worker", [])) + len(cluster.get("chief", [])), 1)


def worker_info() -> tuple[int, int]:
    """(this worker's index, number of workers) from TF_CONFIG; (0, 1) without it."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    workers = len(config.get("cluster", {}).get("worker", [])) or 1
    return int(config.get("task", {}).get("index", 0)), workers
