"""Runs a command as the workers of a localhost MultiWorkerMirroredStrategy cluster."""

import json
import os
import socket
import subprocess


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(args_of, n: int = 2, timeout: float = 300, cwd=None) -> list[str]:
    """Starts `args_of(index)` for each worker with its TF_CONFIG, waits for all; returns each
    one's standard output (AssertionError with its stderr if one fails)."""
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for index in range(n):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        procs.append(
            subprocess.Popen(
                args_of(index),
                env=env,
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outputs.append(out)
    return outputs
