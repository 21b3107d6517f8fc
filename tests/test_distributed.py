"""Two training workers on localhost under MultiWorkerMirroredStrategy keep identical weights."""

import json
import os
import socket
import subprocess
import sys

import pytest

from seq2seq.config import load_config
from seq2seq.data import prepare


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_in_lockstep(tmp_path):
    pairs = [(f"I see {n} cats.", f"Veo {n} gatos.") for n in range(40)]
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tx\n" for en, es in pairs))
    common = [
        f"data.dir={tmp_path / 'prepared'}",
        f"data.data_file={data}",
        "data.valid_fraction=0.1",
        "data.test_fraction=0",
        "train.max_steps=6",
        "train.batch_size=8",
        "train.eval_every=3",
        "train.checkpoint_every=3",
    ]
    prepare(load_config("translate", "tiny", overrides=common))
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            ),
        }
        args = [sys.executable, "-m", "seq2seq", "train", "--preset", "tiny", "--no-progress"]
        for item in [*common, f"train.run_dir={tmp_path / f'runs{index}'}"]:
            args += ["--set", item]
        procs.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outputs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outputs.append(json.loads(out[out.index("{") :]))
    assert [o["workers"] for o in outputs] == [2, 2]
    assert [o["steps"] for o in outputs] == [6, 6]
    assert outputs[0]["weights_digest"] == outputs[1]["weights_digest"]
