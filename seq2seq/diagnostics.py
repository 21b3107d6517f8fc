"""Per-timestep gradient norms ‖∂L/∂h_t‖ from the same backward pass as the weight gradients.

Every `seq2seq.layers.SimpleRNN` called inside `GradientNorms(tape)` feeds a zero "probe" tensor
of shape (T,) into its BPTT op; the op defines the probe's gradient as the per-step norm of δh_t
averaged over the batch, which its backward loop computes anyway. `GradientNorms.gradient` asks
the tape for the weight gradients and the probes' gradients in one call, so the diagnostics cost
one reduction per step and no second backward pass.

Example:
    >>> layer = SimpleRNN(8, return_sequences=True)
    >>> with tf.GradientTape() as tape, GradientNorms(tape) as norms:
    ...     loss = tf.reduce_sum(layer(x))
    >>> grads, per_step = norms.gradient(loss, layer.trainable_variables)
    >>> per_step[layer.name].shape      # (T,)
"""

from __future__ import annotations

import threading

import tensorflow as tf

_active = threading.local()


def active_recorder() -> GradientNorms | None:
    """The innermost `GradientNorms` context open on this thread, if any."""
    stack = getattr(_active, "stack", None)
    return stack[-1] if stack else None


class GradientNorms:
    """Context manager that collects per-timestep gradient norms of every SimpleRNN call.

    Args:
        tape: the `tf.GradientTape` recording the forward pass.

    A layer called several times in the context (e.g. a shared decoder) gets keys `name`,
    `name_1`, … in call order.
    """

    def __init__(self, tape: tf.GradientTape):
        self._tape = tape
        self._probes: dict[str, tf.Tensor] = {}

    def __enter__(self) -> GradientNorms:
        if not hasattr(_active, "stack"):
            _active.stack = []
        _active.stack.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.stack.remove(self)

    def probe(self, name: str, steps: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Creates and watches a (steps,) zero probe for the layer called `name`."""
        key, i = name, 0
        while key in self._probes:
            i += 1
            key = f"{name}_{i}"
        p = tf.zeros([steps], dtype=dtype)
        self._tape.watch(p)
        self._probes[key] = p
        return p

    def gradient(self, target, sources):
        """One backward pass: returns (gradients of `sources`, {layer: (T,) norms})."""
        names = list(self._probes)
        sources = list(sources)
        grads = self._tape.gradient(target, sources + [self._probes[n] for n in names])
        norms = {}
        for n, g in zip(names, grads[len(sources) :], strict=True):
            norms[n] = tf.zeros_like(self._probes[n]) if g is None else g
        return grads[: len(sources)], norms
