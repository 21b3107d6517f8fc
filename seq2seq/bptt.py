"""Whole-sequence SimpleRNN forward pass and its hand-written back-propagation through time.

Notation (batch-major row vectors, step t = 0 … T-1 in processing order, h_{-1} = h0):

    a_t = x_t · kernel + (h_{t-1} ⊙ d) · recurrent_kernel + bias     d: recurrent-dropout mask
    h_t = act(a_t)                     where the step is real (mask_t = 1)
    h_t = h_{t-1}                      where the step is padding (mask_t = 0)

Backward, given g_t = ∂L/∂h_t from the outputs and ∂L/∂h_{T-1} from the final state:

    carry = ∂L/∂h_{T-1} (final state)
    for t = T-1 … 0:
        δh_t  = g_t + carry                                   (the junction sum)
        δa_t  = mask_t · δh_t ⊙ act'(h_t)                      (act' read from the stored h_t)
        carry = (δa_t · recurrent_kernelᵀ) ⊙ d  + (1 - mask_t) · δh_t
        carry = 0   if truncation k and t % k == 0 and t > 0  (chunk boundary)
    ∂L/∂kernel           = Σ_t x_tᵀ δa_t               one matmul after the loop
    ∂L/∂recurrent_kernel = Σ_t (h_{t-1} ⊙ d)ᵀ δa_t     one matmul
    ∂L/∂bias             = Σ_t δa_t
    ∂L/∂x_t              = δa_t · kernelᵀ              one matmul
    ∂L/∂h0               = carry

Only the [B, units] × [units, units] product and elementwise work sit inside either time loop;
the input projection and the three weight/input gradients are single large matmuls. The only
activations kept for the backward pass are the h_t.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

# Activations whose derivative can be read off the activation's output alone, so the backward
# pass needs only the stored h_t (not the pre-activations a_t). The second function maps
# (h_t, δh_t) to δa_t = δh_t ⊙ act'(h_t) with TensorFlow's fused gradient kernels, one op per
# step instead of three (tanh: δh ⊙ (1 − h²); sigmoid: δh ⊙ h(1 − h); relu: δh ⊙ [h > 0]).
_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (tf.tanh, lambda h, dh: tf.raw_ops.TanhGrad(y=h, dy=dh)),
    "sigmoid": (tf.sigmoid, lambda h, dh: tf.raw_ops.SigmoidGrad(y=h, dy=dh)),
    "relu": (tf.nn.relu, lambda h, dh: tf.raw_ops.ReluGrad(gradients=dh, features=h)),
    "linear": (tf.identity, lambda h, dh: dh),
}

SUPPORTED_ACTIVATIONS = tuple(_ACTIVATIONS)


def activation_fn(name: str) -> Callable:
    """The forward function of a supported activation (used by the one-step cell)."""
    return _ACTIVATIONS[name][0]


def _forward(xw, h0, recurrent_kernel, mask, drop, act):
    """Runs the recurrence over projected inputs.

    Args:
        xw: (B, T, N) inputs already projected, x_t · kernel + bias.
        h0: (B, N) initial state.
        recurrent_kernel: (N, N).
        mask: optional (T, B, 1) bool, False on padding steps.
        drop: optional (B, N) recurrent-dropout multiplier, one per sequence.
        act: elementwise activation.

    Returns:
        hs (T, B, N), every hidden state, time-major, and h_last (B, N).
    """
    steps = tf.shape(xw)[1]
    hs = tf.TensorArray(xw.dtype, size=steps, element_shape=h0.shape)

    def body(t, h, hs):
        h_in = h if drop is None else h * drop
        h_new = act(tf.gather(xw, t, axis=1) + tf.matmul(h_in, recurrent_kernel))  # (B, N)
        if mask is not None:
            h_new = tf.where(tf.gather(mask, t), h_new, h)
        return t + 1, h_new, hs.write(t, h_new)

    _, h_last, hs = tf.while_loop(
        lambda t, *_: t < steps, body, (tf.constant(0), h0, hs), maximum_iterations=steps
    )
    return hs.stack(), h_last


def _backward(dhs, dh_last, hs, recurrent_kernel, mask, drop, act_grad, truncation, norms):
    """The BPTT loop.

    Args:
        dhs: (B, T, N) ∂L/∂h_t from the outputs, or None when only the final state is used.
        dh_last: (B, N) ∂L/∂h_{T-1} from the final state.
        hs: (T, B, N) the stored hidden states.

    Returns:
        δa (T, B, N), ∂L/∂h0 (B, N) and, if `norms`, ‖δh_t‖ averaged over the batch (T,).
    """
    steps = tf.shape(hs)[0]
    das = tf.TensorArray(hs.dtype, size=steps, element_shape=dh_last.shape)
    dnorm = tf.TensorArray(hs.dtype, size=steps if norms else 0, element_shape=())
    w_t = tf.transpose(recurrent_kernel)
    zero = tf.zeros_like(dh_last)

    def body(t, carry, das, dnorm):
        dh = carry if dhs is None else tf.gather(dhs, t, axis=1) + carry  # δh_t: (B, N)
        da = act_grad(tf.gather(hs, t), dh)  # δa_t = δh_t ⊙ act'(h_t): (B, N)
        m = None if mask is None else tf.gather(mask, t)
        if m is not None:
            da = tf.where(m, da, zero)
        carry = tf.matmul(da, w_t)
        if drop is not None:
            carry = carry * drop
        if m is not None:
            carry = tf.where(m, carry, dh)
        if truncation is not None:
            carry = tf.where(tf.logical_and(t % truncation == 0, t > 0), zero, carry)
        if norms:
            dnorm = dnorm.write(t, tf.reduce_mean(tf.norm(dh, axis=-1)))
        return t - 1, carry, das.write(t, da), dnorm

    _, dh0, das, dnorm = tf.while_loop(
        lambda t, *_: t >= 0, body, (steps - 1, dh_last, das, dnorm), maximum_iterations=steps
    )
    return das.stack(), dh0, (dnorm.stack() if norms else None)


# XLA-compiled twins of the two loops: one fused program per sequence length instead of a
# dozen small ops per step (see `simple_rnn`'s `compile_loops`).
_forward_xla = tf.function(_forward, jit_compile=True, reduce_retracing=True)
_backward_xla = tf.function(_backward, jit_compile=True, reduce_retracing=True)


def _stop(t):
    return None if t is None else tf.stop_gradient(t)


def simple_rnn(
    inputs: tf.Tensor,
    initial_state: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor | None = None,
    *,
    mask: tf.Tensor | None = None,
    recurrent_dropout_mask: tf.Tensor | None = None,
    activation: str = "tanh",
    truncation: int | None = None,
    grad_probe: tf.Tensor | None = None,
    compile_loops: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """A SimpleRNN over a whole sequence with an explicit BPTT gradient.

    Args:
        inputs: (B, T, D) float tensor.
        initial_state: (B, N) tensor.
        kernel: (D, N) input weights (U in the seed notation).
        recurrent_kernel: (N, N) recurrent weights (W).
        bias: optional (N,) bias (b).
        mask: optional (B, T) bool; False marks padding steps, which copy the state forward.
        recurrent_dropout_mask: optional (B, N) multiplier applied to h_{t-1} at every step.
        activation: one of `SUPPORTED_ACTIVATIONS`.
        truncation: truncated BPTT chunk length k (None: full BPTT).
        grad_probe: optional (T,) tensor (its value is ignored). Its "gradient" is the per-step
            norm ‖∂L/∂h_t‖ averaged over the batch: differentiate the loss with respect to it
            (see `seq2seq.diagnostics`) to read the norms from the same backward pass.

    Returns:
        (outputs, final_state): outputs (B, T, N) is every h_t; final_state (B, N) is h_{T-1}.

    Example:
        >>> x = tf.random.normal([2, 5, 3])
        >>> k, w = tf.random.normal([3, 4]), tf.random.normal([4, 4])
        >>> ys, h = simple_rnn(x, tf.zeros([2, 4]), k, w)
        >>> ys.shape, h.shape
        (TensorShape([2, 5, 4]), TensorShape([2, 4]))
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {SUPPORTED_ACTIVATIONS} (the backward pass reads its "
            f"derivative from h_t); received activation={activation!r}"
        )
    if truncation is not None and (not isinstance(truncation, int) or truncation < 1):
        raise ValueError(f"truncation must be a positive int or None; received {truncation!r}")
    act, act_grad = _ACTIVATIONS[activation]
    mask_tm = None if mask is None else tf.transpose(tf.cast(mask, tf.bool))[:, :, None]
    drop = recurrent_dropout_mask
    want_norms = grad_probe is not None

    @tf.custom_gradient
    def op(*args):
        x, h0, k, w = args[:4]
        b = args[4] if bias is not None else None
        batch, depth, units = tf.shape(x)[0], tf.shape(x)[2], tf.shape(k)[1]
        x_flat = tf.reshape(x, [-1, depth])  # (B·T, D)
        xw = tf.matmul(x_flat, k)  # (B·T, N): the input projection, one matmul for all steps
        if b is not None:
            xw = tf.nn.bias_add(xw, b)
        xw = tf.reshape(xw, [batch, -1, units])  # (B, T, N)
        if compile_loops:  # stop_gradient: the tape must not ask the XLA program for the
            # intermediates of an autodiff of its own (this op's gradient is `grad` below)
            hs, h_last = _forward_xla(*map(_stop, (xw, h0, w, mask_tm, drop)), act)
        else:
            hs, h_last = _forward(xw, h0, w, mask_tm, drop, act)  # (T, B, N), (B, N)

        def grad(d_outputs, d_final):
            if d_final is None:
                d_final = tf.zeros_like(h_last)
            if compile_loops:
                tensors = map(_stop, (d_outputs, d_final, hs, w, mask_tm, drop))
                das, dh0, dnorm = _backward_xla(*tensors, act_grad, truncation, want_norms)
            else:
                das, dh0, dnorm = _backward(
                    d_outputs, d_final, hs, w, mask_tm, drop, act_grad, truncation, want_norms
                )  # (T, B, N), (B, N), (T,)
            # Σ_t h_{t-1}ᵀ δa_t: split off t = 0 (h_{-1} = h0) so the rest are outer-dim
            # slices of hs and δa, which alias memory instead of copying it.
            h_prev, h0_in = hs[:-1], h0
            if drop is not None:
                h_prev, h0_in = h_prev * drop, h0 * drop
            dw = tf.matmul(
                tf.reshape(h_prev, [-1, units]), tf.reshape(das[1:], [-1, units]), transpose_a=True
            ) + tf.matmul(h0_in, das[0], transpose_a=True)
            da_flat = tf.reshape(tf.transpose(das, [1, 0, 2]), [-1, units])  # (B·T, N)
            dk = tf.matmul(x_flat, da_flat, transpose_a=True)
            dx = tf.reshape(tf.matmul(da_flat, k, transpose_b=True), tf.shape(x))
            grads = [dx, dh0, dk, dw]
            if b is not None:
                grads.append(tf.reduce_sum(da_flat, axis=0))
            if want_norms:
                grads.append(tf.cast(dnorm, args[-1].dtype))
            return grads

        return (tf.transpose(hs, [1, 0, 2]), h_last), grad

    args = [inputs, initial_state, kernel, recurrent_kernel]
    if bias is not None:
        args.append(bias)
    if want_norms:
        args.append(grad_probe)
    outputs, final_state = op(*args)
    return outputs, final_state
