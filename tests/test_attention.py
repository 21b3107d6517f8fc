"""LuongAttention: masked softmax over source positions, optional 1/√units scaling."""

import numpy as np
import pytest
import tensorflow as tf

from seq2seq.layers import LuongAttention


@pytest.mark.parametrize("scale", [False, True])
def test_weights_are_the_masked_softmax_of_general_scores(scale):
    rng = np.random.default_rng(0)
    query = tf.constant(rng.normal(size=(2, 3, 4)), tf.float32)
    memory = tf.constant(rng.normal(size=(2, 5, 4)), tf.float32)
    mask = tf.constant([[True] * 5, [True, True, False, False, False]])
    att = LuongAttention(4, scale=scale)
    out, weights = att(query, memory, mask)
    keys = att.keys(memory).numpy()
    scores = np.einsum("btn,bsn->bts", query.numpy(), keys) / (2.0 if scale else 1.0)
    scores = np.where(mask.numpy()[:, None, :], scores, -np.inf)
    want = np.exp(scores - scores.max(-1, keepdims=True))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, want, atol=1e-6)
    assert np.all(weights.numpy()[1, :, 2:] == 0)  # padding gets no attention
    assert out.shape == (2, 3, 4) and np.all(np.abs(out) <= 1)  # tanh(W_c [c; h])
    clone = LuongAttention.from_config(att.get_config())
    assert clone.scale == scale and clone.units == 4
