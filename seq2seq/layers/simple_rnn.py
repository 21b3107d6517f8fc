"""SimpleRNNCell and SimpleRNN: Keras 3 layers whose training gradient is the explicit BPTT of
`seq2seq.bptt`. Weight names and shapes match `keras.layers.SimpleRNN`, so weights copy across."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from seq2seq import bptt, diagnostics


def _check_rate(name: str, value) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"Received an invalid value for argument `{name}`. Expected a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def state_dtype(compute_dtype: str) -> str:
    """The dtype the recurrence runs in: float32 under a mixed-precision policy (mixed_float16,
    mixed_bfloat16), since h_t and the BPTT carry pass through every step and 16-bit rounding
    compounds along them; otherwise the compute dtype. Outputs are cast back to the compute dtype
    for the layers after."""
    return "float32" if compute_dtype in ("float16", "bfloat16") else compute_dtype


@keras.saving.register_keras_serializable(package="seq2seq")
class SimpleRNNCell(keras.layers.Layer):
    """One step of a fully-connected RNN: h_t = act(x_t·kernel + h_{t-1}·recurrent_kernel + bias).

    Follows the Keras cell contract, so it works in step-by-step decoding and inside
    `keras.layers.RNN`. Whole-sequence training should use `SimpleRNN`, which runs the same
    math with an explicit BPTT gradient.

    Args:
        units: positive int, dimensionality of the state.
        activation: one of "tanh" (default), "sigmoid", "relu", "linear".
        use_bias: whether to add `bias`.
        kernel_initializer, recurrent_initializer, bias_initializer: initializers for the weights.
        dropout: fraction of the inputs to drop, in [0, 1).
        recurrent_dropout: fraction of the previous state to drop, in [0, 1).
        seed: random seed for dropout.

    Call arguments:
        inputs: (B, D) tensor.
        states: (B, units) tensor or a one-element list of it.
        training: whether dropout applies.

    Returns:
        (output, [new_state]) where output is new_state, both (B, units).

    Example:
        >>> cell = SimpleRNNCell(4)
        >>> y, [h] = cell(tf.ones([2, 3]), [tf.zeros([2, 4])])
    """

    def __init__(
        self,
        units: int,
        activation: str = "tanh",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                "Received an invalid value for argument `units`. Expected a strictly positive "
                f"int. Received: units={units!r}"
            )
        if activation not in bptt.SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"Received an invalid value for argument `activation`. Expected one of "
                f"{bptt.SUPPORTED_ACTIVATIONS}. Received: activation={activation!r}"
            )
        self.units = units
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout = _check_rate("dropout", dropout)
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        # autocast=False: under a mixed-precision policy the weights are read at their own
        # dtype (float32) and the layers cast what they need; see SimpleRNN.call
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            name="kernel",
            autocast=False,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
            autocast=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.units,), initializer=self.bias_initializer, name="bias", autocast=False
            )

    def call(self, inputs, states, training=False):
        prev = states[0] if isinstance(states, (list, tuple)) else states
        out_dtype = self.compute_dtype
        dtype = state_dtype(out_dtype)
        inputs, prev = ops.cast(inputs, dtype), ops.cast(prev, dtype)
        if training and self.dropout > 0:
            inputs = keras.random.dropout(inputs, self.dropout, seed=self.seed_generator)
        if training and self.recurrent_dropout > 0:
            prev = keras.random.dropout(prev, self.recurrent_dropout, seed=self.seed_generator)
        a = ops.matmul(inputs, ops.cast(self.kernel, dtype))
        a = a + ops.matmul(prev, ops.cast(self.recurrent_kernel, dtype))
        if self.use_bias:
            a = a + ops.cast(self.bias, dtype)
        h = ops.cast(bptt.activation_fn(self.activation)(a), out_dtype)
        return h, [h]

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, self.units), dtype=self.compute_dtype)]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="seq2seq")
class SimpleRNN(keras.layers.Layer):
    """A fully-connected RNN over whole sequences, trained by explicit BPTT (`seq2seq.bptt`).

    Drop-in for `keras.layers.SimpleRNN`: same arguments, weight names and shapes, masking and
    output conventions. Faster to train because the input projection and the weight gradients are
    single matmuls outside the time loop.

    Args:
        units: positive int, dimensionality of the state.
        activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
        dropout, recurrent_dropout, seed: as for `SimpleRNNCell`. Dropout masks are drawn once
            per sequence and reused at every step, in both passes.
        return_sequences: return every h_t (B, T, units) rather than the last (B, units).
        return_state: also return the final state.
        go_backwards: process the sequence in reverse; outputs come in processing order.
        bptt_truncation: None for full BPTT, or k: gradients do not flow through the hidden state
            entering steps k, 2k, … (chunks of k steps from the start, in processing order).
        compile_loops: in training, run the two time loops as XLA programs (one per sequence
            length, compiled once and cached), which removes most of the per-step op overhead;
            inference (and so the SavedModel) keeps the plain loops, whose cost does not
            depend on compiling for each new batch shape.

    Call arguments:
        inputs: (B, T, D) tensor.
        initial_state: optional (B, units) tensor (or a one-element list of it); zeros if None.
        mask: optional (B, T) bool; padding steps copy the state forward (Keras semantics).
        training: whether dropout applies.

    Returns:
        The output, or `[output, final_state]` when `return_state`.

    Example:
        >>> layer = SimpleRNN(16, return_sequences=True)
        >>> layer(tf.random.normal([4, 7, 8])).shape
        TensorShape([4, 7, 16])
    """

    def __init__(
        self,
        units: int,
        activation: str = "tanh",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        bptt_truncation: int | None = None,
        compile_loops: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.compile_loops = bool(compile_loops)
        if bptt_truncation is not None and (
            not isinstance(bptt_truncation, int)
            or isinstance(bptt_truncation, bool)
            or bptt_truncation < 1
        ):
            raise ValueError(
                "Received an invalid value for argument `bptt_truncation`. Expected None or a "
                f"positive int. Received: bptt_truncation={bptt_truncation!r}"
            )
        self.cell = SimpleRNNCell(
            units,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=self.dtype_policy,
            name="simple_rnn_cell",
        )
        self.units = units
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.bptt_truncation = bptt_truncation
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.supports_masking = True

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                f"SimpleRNN expects inputs of rank 3 (batch, time, features); received shape "
                f"{tuple(sequences_shape)}"
            )
        self.cell.build((sequences_shape[0], sequences_shape[-1]))

    def call(self, sequences, initial_state=None, mask=None, training=False):
        inputs = sequences
        cell = self.cell
        out_dtype = self.compute_dtype
        dtype = state_dtype(out_dtype)
        inputs = tf.cast(inputs, dtype)
        if inputs.shape[1] == 0:
            raise ValueError("SimpleRNN needs at least one timestep; received a sequence of 0")
        batch = tf.shape(inputs)[0]
        if isinstance(initial_state, (list, tuple)):
            initial_state = initial_state[0]
        if initial_state is None:
            initial_state = tf.zeros([batch, self.units], dtype=dtype)
        initial_state = tf.cast(initial_state, dtype)
        if self.go_backwards:
            inputs = tf.reverse(inputs, [1])
            mask = None if mask is None else tf.reverse(mask, [1])
        drop = None
        if training and cell.dropout > 0:
            keep = tf.ones([batch, 1, tf.shape(inputs)[2]], dtype=dtype)
            inputs = inputs * keras.random.dropout(keep, cell.dropout, seed=self.seed_generator)
        if training and cell.recurrent_dropout > 0:
            keep = tf.ones([batch, self.units], dtype=dtype)
            drop = keras.random.dropout(keep, cell.recurrent_dropout, seed=self.seed_generator)
        recorder = diagnostics.active_recorder()
        probe = None
        if recorder is not None:
            probe = recorder.probe(self.name, tf.shape(inputs)[1], dtype)
        outputs, final_state = bptt.simple_rnn(
            inputs,
            initial_state,
            tf.cast(ops.convert_to_tensor(cell.kernel), dtype),
            tf.cast(ops.convert_to_tensor(cell.recurrent_kernel), dtype),
            tf.cast(ops.convert_to_tensor(cell.bias), dtype) if cell.use_bias else None,
            mask=mask,
            recurrent_dropout_mask=drop,
            activation=cell.activation,
            truncation=self.bptt_truncation,
            grad_probe=probe,
            compile_loops=self.compile_loops and training is True,
        )
        if out_dtype != dtype:
            outputs, final_state = tf.cast(outputs, out_dtype), tf.cast(final_state, out_dtype)
        output = outputs if self.return_sequences else final_state
        if self.return_state:
            return [output, final_state]
        return output

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps = sequences_shape[0], sequences_shape[1]
        out = (batch, steps, self.units) if self.return_sequences else (batch, self.units)
        if self.return_state:
            return [out, (batch, self.units)]
        return out

    def compute_mask(self, sequences, mask=None):
        out_mask = mask if self.return_sequences else None
        if mask is not None and self.go_backwards and self.return_sequences:
            out_mask = ops.flip(mask, axis=1)
        if self.return_state:
            return [out_mask, None]
        return out_mask

    @property
    def kernel(self):
        return self.cell.kernel

    @property
    def recurrent_kernel(self):
        return self.cell.recurrent_kernel

    @property
    def bias(self):
        return self.cell.bias

    def get_config(self):
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        return {
            **super().get_config(),
            **cell_config,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "bptt_truncation": self.bptt_truncation,
            "compile_loops": self.compile_loops,
        }
