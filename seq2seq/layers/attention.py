"""Luong (multiplicative, "general") attention over encoder states."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="seq2seq")
class LuongAttention(keras.layers.Layer):
    """score(h_t, h̄_s) = h_t · W_a · h̄_sᵀ;  c_t = Σ_s softmax(score)_s h̄_s;
    h̃_t = tanh(W_c [c_t; h_t]).  (Luong et al., 2015, "general" score, no input feeding, so the
    decoder RNN runs over the whole target sequence at once and attention is one batched step.)

    Args:
        units: width of the attentional state h̃_t.
        scale: divide the scores by √units, so that the softmax does not start saturated
            (with 512 units, unscaled scores have a standard deviation near 10 at init).

    Call arguments:
        query: (B, T, N) decoder states.
        memory: (B, S, M) encoder states.
        memory_mask: (B, S) bool, False on source padding.
        keys: optional precomputed `self.keys(memory)` (decoding reuses them every step).

    Returns:
        (attentional states (B, T, units), attention weights (B, T, S)).

    Example:
        >>> att = LuongAttention(8)
        >>> h, w = att(tf.ones([2, 3, 8]), tf.ones([2, 5, 8]), tf.ones([2, 5], bool))
    """

    def __init__(self, units: int, scale: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.scale = scale
        self.supports_masking = True  # the query's (decoder's) mask passes through
        self.key_projection = keras.layers.Dense(units, use_bias=False, name="w_a")
        self.combine = keras.layers.Dense(units, activation="tanh", use_bias=False, name="w_c")

    def build(self, query_shape, memory_shape=None, memory_mask_shape=None, keys_shape=None):
        memory_shape = memory_shape or query_shape
        self.key_projection.build(memory_shape)
        self.combine.build((*query_shape[:-1], query_shape[-1] + memory_shape[-1]))

    def keys(self, memory):
        return self.key_projection(memory)  # (B, S, N)

    def call(self, query, memory, memory_mask, keys=None):
        keys = self.keys(memory) if keys is None else keys
        scores = tf.matmul(query, keys, transpose_b=True)  # (B, T, S)
        if self.scale:
            scores = scores / tf.sqrt(tf.cast(tf.shape(keys)[-1], scores.dtype))
        scores = tf.where(memory_mask[:, None, :], scores, tf.cast(-1e9, scores.dtype))
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.matmul(weights, memory)  # (B, T, M)
        return self.combine(tf.concat([context, query], axis=-1)), weights

    def get_config(self):
        return {**super().get_config(), "units": self.units, "scale": self.scale}
