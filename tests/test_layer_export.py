"""A model built on the explicit-BPTT layer exports as a SavedModel that TensorFlow alone runs."""

import json
import textwrap

import keras
import numpy as np
import tensorflow as tf
from fresh import run_blocked

from seq2seq.layers import SimpleRNN

FRESH_PROCESS = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    path, ids = sys.argv[1], json.loads(sys.argv[2])
    loaded = tf.saved_model.load(path)
    out = loaded.serve(tf.constant(ids, tf.int32))
    assert "seq2seq" not in sys.modules
    print(json.dumps(np.asarray(out).tolist()))
    """
)


def test_savedmodel_runs_in_tensorflow_only_process_on_unseen_length(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(30, 8, mask_zero=True),
            SimpleRNN(12, return_sequences=True),
            SimpleRNN(12, go_backwards=True),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda ids: model(ids, training=False),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    path = str(tmp_path / "saved")
    archive.write_out(path, verbose=False)

    # Lengths 11 and 3 were never traced: the signature has a dynamic time dimension.
    for ids in (
        [[5, 9, 2, 7, 1, 4, 4, 8, 3, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]],
        [[7, 0, 0]],
    ):
        proc = run_blocked(FRESH_PROCESS, path, json.dumps(ids))
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
        np.testing.assert_allclose(got, model(np.array(ids), training=False), atol=1e-5)
