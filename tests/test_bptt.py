"""The explicit BPTT gradient agrees with autodiff of an independent reference forward pass."""

import numpy as np
import pytest
import tensorflow as tf

from seq2seq import bptt
from seq2seq.diagnostics import GradientNorms

B, T, D, N = 3, 7, 4, 5


@pytest.fixture(autouse=True, params=[False, True], ids=["loops", "xla-loops"])
def compile_loops(request, monkeypatch):
    """Every test runs twice: with the plain time loops, and with their XLA-compiled twins
    (what SimpleRNN uses in training)."""
    monkeypatch.setitem(bptt.simple_rnn.__kwdefaults__, "compile_loops", request.param)
    return request.param


ACTS = {"tanh": tf.tanh, "sigmoid": tf.sigmoid, "relu": tf.nn.relu, "linear": tf.identity}


def reference(x, h0, k, w, b, mask=None, drop=None, truncation=None, act=tf.tanh):
    """A plain per-step loop, differentiated by tf.GradientTape. Truncation is the spec's
    definition: stop_gradient on the hidden state entering every step t with t % k == 0, t > 0."""
    h, outs = h0, []
    for t in range(x.shape[1]):
        h_in = tf.stop_gradient(h) if truncation and t % truncation == 0 and t > 0 else h
        h_rec = h_in if drop is None else h_in * drop
        h_new = act(x[:, t] @ k + h_rec @ w + b)
        if mask is not None:
            h_new = tf.where(mask[:, t, None], h_new, h_in)
        h = h_new
        outs.append(h)
    return tf.stack(outs, axis=1), h, outs


def rel_err(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)


def make_inputs(seed=0, dtype=tf.float64):
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(B, T, D)), dtype)
    h0 = tf.constant(rng.normal(size=(B, N)) * 0.5, dtype)
    k = tf.Variable(rng.normal(size=(D, N)) * 0.5, dtype=dtype)
    w = tf.Variable(rng.normal(size=(N, N)) * 0.5, dtype=dtype)
    b = tf.Variable(rng.normal(size=(N,)) * 0.1, dtype=dtype)
    out_weights = tf.constant(rng.normal(size=(B, T, N)), dtype)
    final_weights = tf.constant(rng.normal(size=(B, N)), dtype)
    return x, h0, k, w, b, out_weights, final_weights


def loss_fn(seq, final, out_w, final_w, use_seq=True, use_final=True):
    loss = tf.constant(0.0, seq.dtype)
    if use_seq:
        loss += tf.reduce_sum(tf.sin(seq) * out_w)  # a non-trivial g_t at every step
    if use_final:
        loss += tf.reduce_sum(tf.square(final) * final_w)
    return loss


def both_gradients(mask=None, drop=None, truncation=None, activation="tanh", **loss_kw):
    x, h0, k, w, b, out_w, final_w = make_inputs()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, h0])
        seq, final = bptt.simple_rnn(
            x,
            h0,
            k,
            w,
            b,
            mask=mask,
            recurrent_dropout_mask=drop,
            activation=activation,
            truncation=truncation,
        )
        ours = loss_fn(seq, final, out_w, final_w, **loss_kw)
        rseq, rfinal, _ = reference(
            x, h0, k, w, b, mask=mask, drop=drop, truncation=truncation, act=ACTS[activation]
        )
        ref = loss_fn(rseq, rfinal, out_w, final_w, **loss_kw)
    sources = [k, w, b, x, h0]
    got = tape.gradient(ours, sources)
    want = tape.gradient(ref, sources)
    np.testing.assert_allclose(seq, rseq, rtol=1e-12, atol=1e-12)
    return got, want


def assert_exact(got, want):
    names = ["kernel", "recurrent_kernel", "bias", "inputs", "initial_state"]
    for name, g, r in zip(names, got, want, strict=True):
        assert r is not None and np.max(np.abs(r)) > 0, f"reference gradient of {name} is zero"
        assert rel_err(g, r) <= 1e-9, f"{name}: relative error {rel_err(g, r):.3g}"


MASK = tf.constant(
    np.array(
        [
            [1, 1, 1, 1, 0, 0, 0],  # right padding
            [1, 0, 1, 1, 0, 1, 1],  # holes
            [1, 1, 1, 1, 1, 1, 1],
        ],
        dtype=bool,
    )
)


def test_full_bptt_matches_autodiff():
    assert_exact(*both_gradients())


def test_masked_steps_pass_gradient_through():
    assert_exact(*both_gradients(mask=MASK))


@pytest.mark.parametrize("k", [1, 3, T])
def test_truncated_bptt_matches_stop_gradient_reference(k):
    assert_exact(*both_gradients(truncation=k))


@pytest.mark.parametrize("k", [1, 3])
def test_truncation_with_mask(k):
    assert_exact(*both_gradients(mask=MASK, truncation=k))


def test_truncation_changes_the_gradient():
    full, _ = both_gradients()
    cut, _ = both_gradients(truncation=2)
    assert rel_err(cut[1], full[1]) > 1e-3  # recurrent_kernel gradient differs


def test_recurrent_dropout_matches_autodiff_with_same_mask():
    rng = np.random.default_rng(1)
    keep = rng.random((B, N)) > 0.3
    drop = tf.constant(keep / 0.7, tf.float64)
    assert_exact(*both_gradients(drop=drop))
    assert_exact(*both_gradients(drop=drop, mask=MASK, truncation=3))


def test_loss_on_final_state_only():
    assert_exact(*both_gradients(use_seq=False))
    assert_exact(*both_gradients(use_seq=False, mask=MASK))


@pytest.mark.parametrize("activation", ["sigmoid", "relu", "linear"])
def test_other_activations(activation):
    assert_exact(*both_gradients(activation=activation))


def test_unknown_activation_is_rejected():
    x, h0, k, w, b, *_ = make_inputs()
    with pytest.raises(ValueError, match="activation"):
        bptt.simple_rnn(x, h0, k, w, b, activation="softplus")


def test_gradient_is_the_hand_written_one(monkeypatch):
    calls = []
    original = bptt._backward

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bptt, "_backward", spy)
    x, h0, k, w, b, out_w, final_w = make_inputs()
    with tf.GradientTape() as tape:
        seq, final = bptt.simple_rnn(x, h0, k, w, b, compile_loops=False)
        loss = loss_fn(seq, final, out_w, final_w)
    tape.gradient(loss, [k, w, b])
    assert calls == [1]


def test_gradient_works_inside_tf_function():
    x, h0, k, w, b, out_w, final_w = make_inputs()

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            seq, final = bptt.simple_rnn(x, h0, k, w, b, mask=MASK, truncation=3)
            loss = loss_fn(seq, final, out_w, final_w)
        return tape.gradient(loss, [k, w, b])

    got = grads(x)
    with tf.GradientTape() as tape:
        rseq, rfinal, _ = reference(x, h0, k, w, b, mask=MASK, truncation=3)
        ref = loss_fn(rseq, rfinal, out_w, final_w)
    for g, r in zip(got, tape.gradient(ref, [k, w, b]), strict=True):
        assert rel_err(g, r) <= 1e-9


def test_per_step_gradient_norms_equal_autodiff_norms():
    x, h0, k, w, b, out_w, final_w = make_inputs()
    with tf.GradientTape() as tape, GradientNorms(tape) as rec:
        seq, final = bptt.simple_rnn(
            x, h0, k, w, b, mask=MASK, grad_probe=rec.probe("rnn", T, tf.float64)
        )
        loss = loss_fn(seq, final, out_w, final_w)
    grads, norms = rec.gradient(loss, [k])
    assert grads[0] is not None

    with tf.GradientTape() as tape:
        rseq, rfinal, hs = reference(x, h0, k, w, b, mask=MASK)
        ref = loss_fn(rseq, rfinal, out_w, final_w)
    dh = tape.gradient(ref, hs)  # total ∂L/∂h_t through every later step
    want = [float(tf.reduce_mean(tf.norm(d, axis=-1))) for d in dh]
    np.testing.assert_allclose(norms["rnn"], want, rtol=1e-9)
    assert norms["rnn"].shape == (T,)
