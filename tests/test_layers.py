"""SimpleRNN / SimpleRNNCell behave like keras.layers.SimpleRNN and follow the Keras contracts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from seq2seq.diagnostics import GradientNorms
from seq2seq.layers import SimpleRNN, SimpleRNNCell

B, T, D, N = 4, 6, 3, 5


def pair(**kwargs):
    """Our layer and Keras's, with identical weights."""
    ref = keras.layers.SimpleRNN(N, **kwargs)
    ref.build((None, T, D))
    ours = SimpleRNN(N, **kwargs)
    ours.build((None, T, D))
    ours.set_weights(ref.get_weights())
    return ours, ref


def inputs(seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D)).astype("float32")


MASK = np.array(
    [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 0]], dtype=bool
)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_keras(return_sequences, return_state, go_backwards, masked):
    kw = dict(
        return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards
    )
    ours, ref = pair(**kw)
    x = inputs()
    mask = MASK if masked else None
    got, want = ours(x, mask=mask), ref(x, mask=mask)
    got = got if return_state else [got]
    want = want if return_state else [want]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_initial_state_matches_keras():
    ours, ref = pair(return_sequences=True, return_state=True)
    x = inputs()
    h0 = np.random.default_rng(3).normal(size=(B, N)).astype("float32")
    for g, w in zip(ours(x, initial_state=h0), ref(x, initial_state=[h0]), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
    for g, w in zip(
        ours(x, initial_state=[h0], mask=MASK), ref(x, initial_state=[h0], mask=MASK), strict=True
    ):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_weights_copy_both_ways_with_keras_names():
    ours, ref = pair()
    assert [v.name for v in ours.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [v.shape for v in ours.weights] == [(D, N), (N, N), (N,)]
    ours.set_weights([w * 0.5 for w in ours.get_weights()])
    ref.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(inputs()), ref(inputs()), atol=1e-5)


def test_training_gradient_matches_keras_autodiff():
    ours, ref = pair(return_sequences=True)
    x = tf.constant(inputs())
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x, mask=MASK)))
        grads.append(tape.gradient(loss, layer.trainable_variables + [x]))
    for g, w in zip(*grads, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_embedding_mask_zero_reaches_the_layer():
    ids = np.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    emb = keras.layers.Embedding(10, D, mask_zero=True)
    ours = SimpleRNN(N)
    ref = keras.layers.SimpleRNN(N)
    ref(emb(ids))
    ours(emb(ids))
    ours.set_weights(ref.get_weights())
    np.testing.assert_allclose(ours(emb(ids)), ref(emb(ids)), atol=1e-5)
    # padding does not change the final state: it equals the state after the last real token
    np.testing.assert_allclose(ours(emb(ids))[0], ours(emb(ids[:, :3]))[0], atol=1e-6)


def test_config_round_trip():
    layer = SimpleRNN(
        7,
        activation="relu",
        return_sequences=True,
        go_backwards=True,
        bptt_truncation=4,
        recurrent_dropout=0.25,
        seed=3,
        name="rnn",
    )
    clone = SimpleRNN.from_config(layer.get_config())
    for key in (
        "units",
        "activation",
        "return_sequences",
        "go_backwards",
        "bptt_truncation",
        "recurrent_dropout",
        "seed",
        "name",
    ):
        assert getattr(clone, key, getattr(clone.cell, key, None)) == getattr(
            layer, key, getattr(layer.cell, key, None)
        ), key
    cell = SimpleRNNCell(4, dropout=0.1)
    assert SimpleRNNCell.from_config(cell.get_config()).get_config() == cell.get_config()


def test_saved_in_keras_file_and_reloaded(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(20, 4, mask_zero=True),
            SimpleRNN(6, bptt_truncation=2),
            keras.layers.Dense(2),
        ]
    )
    ids = np.array([[1, 2, 3, 0], [4, 5, 0, 0]])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.layers[1], SimpleRNN)
    assert loaded.layers[1].bptt_truncation == 2
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-6)


def test_float64_layer():
    ours = SimpleRNN(N, dtype="float64", return_sequences=True)
    out = ours(inputs().astype("float64"))
    assert out.dtype == tf.float64
    assert ours.kernel.dtype == "float64"


def test_mixed_float16_policy():
    ours = SimpleRNN(N, dtype="mixed_float16", return_sequences=True)
    full = SimpleRNN(N, return_sequences=True)
    x = inputs()
    full(x)
    ours(x)
    ours.set_weights(full.get_weights())
    with tf.GradientTape() as tape:
        y = ours(x, training=True)  # the training path: XLA-compiled loops
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    grads = tape.gradient(loss, ours.trainable_variables)
    assert y.dtype == tf.float16
    assert all(v.dtype == "float32" for v in ours.trainable_variables)
    assert all(g.dtype == tf.float32 and np.all(np.isfinite(g)) for g in grads)
    # the recurrence runs in float32 (weights unrounded, state and BPTT carry in float32): given
    # the same (float16) inputs, the outputs differ from the float32 layer's by their final
    # rounding to float16 only (half a float16 step at 1.0 is 2⁻¹¹), and the weight gradients
    # are the float32 ones
    x16 = tf.cast(tf.cast(x, tf.float16), tf.float32)  # Keras casts the layer's inputs
    with tf.GradientTape() as tape:
        y_full = full(x16)
        loss_full = tf.reduce_sum(tf.cast(tf.cast(y_full, tf.float16), tf.float32))
    grads_full = tape.gradient(loss_full, full.trainable_variables)
    np.testing.assert_allclose(tf.cast(y, tf.float32), y_full, atol=2**-11)
    for g, g_full in zip(grads, grads_full, strict=True):
        np.testing.assert_allclose(g, g_full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_tf_function_and_jit_compile_agree_with_eager(jit):
    layer = SimpleRNN(N, return_sequences=True, bptt_truncation=3)
    x = tf.constant(inputs())

    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, mask=MASK)))
        return tape.gradient(loss, layer.trainable_variables)

    eager = grads(x)
    compiled = tf.function(grads, jit_compile=jit)(x)
    for e, c in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training_and_one_mask_per_sequence():
    layer = SimpleRNN(N, return_sequences=True, dropout=0.5, recurrent_dropout=0.5, seed=0)
    x = inputs()
    np.testing.assert_allclose(layer(x, training=False), layer(x), atol=0)
    assert not np.allclose(layer(x, training=True), layer(x, training=False))
    # One input-dropout mask per sequence: a sequence of identical steps sees identical inputs
    # at every step, so with recurrent dropout off and a zero recurrent kernel every step's
    # output is the same.
    layer = SimpleRNN(N, return_sequences=True, dropout=0.5, seed=0)
    const = np.repeat(inputs()[:, :1], T, axis=1)
    layer(const)
    layer.recurrent_kernel.assign(np.zeros((N, N), "float32"))
    out = layer(const, training=True).numpy()
    np.testing.assert_allclose(out, np.repeat(out[:, :1], T, axis=1), atol=1e-6)


def test_cell_step_equals_one_layer_step():
    layer = SimpleRNN(N, return_state=True)
    x = inputs()
    _, h = layer(x[:, :1])
    y, [h_cell] = layer.cell(x[:, 0], [tf.zeros((B, N))])
    np.testing.assert_allclose(h_cell, h, atol=1e-6)
    np.testing.assert_allclose(y, h, atol=1e-6)


def test_stacked_layers_train_with_diagnostics():
    first = SimpleRNN(N, return_sequences=True, name="first")
    second = SimpleRNN(N, name="second")
    x = inputs()
    with tf.GradientTape() as tape, GradientNorms(tape) as rec:
        loss = tf.reduce_sum(second(first(x, training=True), training=True))
    variables = first.trainable_variables + second.trainable_variables
    grads, norms = rec.gradient(loss, variables)
    assert all(g is not None for g in grads)
    assert set(norms) == {"first", "second"}
    assert norms["first"].shape == (T,) and norms["second"].shape == (T,)
    assert np.all(norms["second"].numpy() > 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(units=0), "units"),
        (dict(units=-3), "units"),
        (dict(units=4, dropout=1.0), "dropout"),
        (dict(units=4, recurrent_dropout=-0.1), "recurrent_dropout"),
        (dict(units=4, bptt_truncation=0), "bptt_truncation"),
        (dict(units=4, activation="softmax"), "activation"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimpleRNN(**kwargs)


def test_wrong_input_rank_is_a_clear_error():
    with pytest.raises(ValueError, match="rank 3"):
        SimpleRNN(N)(np.zeros((B, D), "float32"))
