"""Translator: embedding + stacked SimpleRNN encoder, decoder initialised with the encoder's final
states, optional Luong attention, projection to the target vocabulary, optionally mixed with a
copy distribution over the source pieces (pointer-generator)."""

from __future__ import annotations

import keras
import tensorflow as tf

from seq2seq import export_format as fmt
from seq2seq.decoding import beam_search, greedy_decode
from seq2seq.export_format import PAD
from seq2seq.layers import LuongAttention, SimpleRNN


@keras.saving.register_keras_serializable(package="seq2seq")
class Translator(keras.Model):
    """Encoder-decoder on the explicit-BPTT SimpleRNN.

    Training runs both RNN stacks over whole sequences (teacher forcing: the decoder reads
    `<sos> y_1 … y_n` and predicts `y_1 … y_n <eos>`). Decoding (`seq2seq.decoding`) runs the
    same weights one step at a time through each layer's cell, via `encode` and `step`;
    `serving_functions` are the graph functions built on it that inference calls and the
    SavedModel exports.

    Args:
        source_vocab_size, target_vocab_size: SentencePiece vocabulary sizes.
        embedding_dim: token embedding width.
        units: SimpleRNN state size.
        layers: stacked SimpleRNN layers in the encoder and in the decoder.
        attention: "none" or "luong".
        reverse_source: read the source backwards (padding stays at the end).
        attention_scale: divide the Luong scores by √units (see LuongAttention).
        dropout: on embeddings, between layers and before the projection.
        recurrent_dropout, bptt_truncation: passed to every SimpleRNN.
        copy: pointer-generator (See et al. 2017): P(w) = p_gen · softmax(logits)(w)
            + (1 − p_gen) · Σ_{s: x_s = w} a_s, with a the attention weights and
            p_gen = σ(w_g · [h̃_t; e_t] + b_g) from the attentional state and the input
            embedding; so a source piece (a name, a number) can be output by pointing at it.
            Needs attention and one vocabulary for both sides.

    Call arguments:
        inputs: (source_ids (B, S), decoder_input (B, T)), int32, PAD-padded.
        training: whether dropout applies.

    Returns:
        logits (B, T, target_vocab_size); with `copy`, log P(w), which are logits too
        (log_softmax leaves them unchanged, as they already sum to one in probability).
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_dim: int = 256,
        units: int = 256,
        layers: int = 1,
        attention: str = "none",
        reverse_source: bool = True,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        bptt_truncation: int | None = None,
        attention_scale: bool = False,
        copy: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in ("none", "luong"):
            raise ValueError(f"attention must be 'none' or 'luong'; received {attention!r}")
        if copy and (attention == "none" or source_vocab_size != target_vocab_size):
            raise ValueError("copy needs attention and one vocabulary for source and target")
        self.copy = copy
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.num_layers = layers
        self.attention_type = attention
        self.reverse_source = reverse_source
        self.dropout_rate = dropout
        self.recurrent_dropout = recurrent_dropout
        self.bptt_truncation = bptt_truncation
        self.attention_scale = attention_scale
        self.source_embedding = keras.layers.Embedding(
            source_vocab_size, embedding_dim, name="source_embedding"
        )
        self.target_embedding = keras.layers.Embedding(
            target_vocab_size, embedding_dim, name="target_embedding"
        )

        def rnn(name):
            return SimpleRNN(
                units,
                return_sequences=True,
                return_state=True,
                recurrent_dropout=recurrent_dropout,
                bptt_truncation=bptt_truncation,
                name=name,
            )

        self.encoder_layers = [rnn(f"encoder_{i}") for i in range(layers)]
        self.decoder_layers = [rnn(f"decoder_{i}") for i in range(layers)]
        self.attention = (
            LuongAttention(units, scale=attention_scale, name="attention")
            if attention == "luong"
            else None
        )
        self.dropout = keras.layers.Dropout(dropout)
        self.projection = keras.layers.Dense(target_vocab_size, name="projection")
        self.copy_gate = keras.layers.Dense(1, name="copy_gate") if copy else None

    def encode(self, source_ids, training=False):
        """Returns (memory (B, S, N), memory mask (B, S), final states: one (B, N) per layer)."""
        mask = tf.not_equal(source_ids, PAD)  # padding stays at the end when reversed
        x = self.source_embedding(self.memory_ids(source_ids))
        x = self.dropout(x, training=training)  # (B, S, E)
        states = []
        for i, layer in enumerate(self.encoder_layers):
            x, h = layer(x, mask=mask, training=training)  # (B, S, N), (B, N)
            states.append(h)
            if i + 1 < len(self.encoder_layers):
                x = self.dropout(x, training=training)
        return x, mask, states

    def memory_ids(self, source_ids):
        """The source ids in the order of the memory (reversed with `reverse_source`)."""
        if not self.reverse_source:
            return source_ids
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(source_ids, PAD), tf.int32), axis=1)
        return tf.reverse_sequence(source_ids, lengths, seq_axis=1, batch_axis=0)

    def call(self, inputs, training=False):
        source_ids, decoder_input = inputs
        memory, memory_mask, states = self.encode(source_ids, training=training)
        mask = tf.not_equal(decoder_input, PAD)
        e = self.dropout(self.target_embedding(decoder_input), training=training)  # (B, T, E)
        y = e
        for i, layer in enumerate(self.decoder_layers):
            y, _ = layer(y, initial_state=states[i], mask=mask, training=training)  # (B, T, N)
            if i + 1 < len(self.decoder_layers):
                y = self.dropout(y, training=training)
        weights = None
        if self.attention is not None:
            y, weights = self.attention(y, memory, memory_mask)
        logits = self.projection(self.dropout(y, training=training))  # (B, T, V)
        if self.copy:
            return self.mix_copy(logits, y, e, weights, self.memory_ids(source_ids))
        return logits

    def mix_copy(self, logits, h, e, weights, memory_ids):
        """log P(w) of the pointer-generator (see the class): logits, attentional states h and
        input embeddings e (B, T, ·), attention weights (B, T, S) over the memory, whose pieces
        are memory_ids (B, S)."""
        p_gen = tf.sigmoid(tf.cast(self.copy_gate(tf.concat([h, e], axis=-1)), tf.float32))
        generate = tf.nn.softmax(tf.cast(logits, tf.float32))  # (B, T, V)
        copy = scatter_to_vocab(tf.cast(weights, tf.float32), memory_ids, self.target_vocab_size)
        return tf.math.log(p_gen * generate + (1.0 - p_gen) * copy + 1e-9)

    def attention_keys(self, memory):
        return None if self.attention is None else self.attention.keys(memory)

    def step(self, tokens, states, memory, memory_mask, keys=None, memory_ids=None):
        """One decoding step: tokens (B,) → (logits (B, V), new states, attention weights
        (B, S) over the memory, or None without attention). With `copy`, `memory_ids` (B, S)
        are the memory's pieces and the logits are log P(w)."""
        e = self.target_embedding(tokens)  # (B, E)
        y = e
        new_states = []
        for layer, h in zip(self.decoder_layers, states, strict=True):
            y, [h] = layer.cell(y, [h])  # (B, N)
            new_states.append(h)
        weights = None
        if self.attention is not None:
            y, weights = self.attention(y[:, None, :], memory, memory_mask, keys=keys)
            y, weights = y[:, 0, :], weights[:, 0, :]
        logits = self.projection(y)
        if self.copy:
            mixed = self.mix_copy(
                logits[:, None], y[:, None], e[:, None], weights[:, None], memory_ids
            )
            logits = mixed[:, 0]
        return logits, new_states, weights

    def source_order(self, weights, source_ids):
        """Attention weights (B, …, S) over the memory → over the source pieces in reading
        order (the memory is reversed when `reverse_source`; padding stays at the end)."""
        if not self.reverse_source:
            return weights
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(source_ids, PAD), tf.int32), axis=1)
        last = len(weights.shape) - 1
        moved = tf.transpose(weights, [0, last, *range(1, last)])  # (B, S, …)
        moved = tf.reverse_sequence(moved, lengths, seq_axis=1, batch_axis=0)
        return tf.transpose(moved, [0, *range(2, last + 1), 1])

    def attention_weights(self, source_ids, decoder_input):
        """Teacher-forced attention (B, T, S) in source order (tests, the report)."""
        if self.attention is None:
            raise ValueError("this translator has no attention (model.attention is 'none')")
        memory, memory_mask, states = self.encode(source_ids)
        mask = tf.not_equal(decoder_input, PAD)
        y = self.target_embedding(decoder_input)
        for i, layer in enumerate(self.decoder_layers):
            y, _ = layer(y, initial_state=states[i], mask=mask)
        _, weights = self.attention(y, memory, memory_mask)
        return self.source_order(weights, source_ids)

    # --- serving: what `seq2seq.inference` calls and `seq2seq.export` writes ------------------

    def serving_functions(self) -> dict:
        """{signature name: (function, input signature)}: greedy and beam search on token ids.

        Each returns {"ids", "lengths", "scores"}; with attention there are also the `_aligned`
        twins, which add "alignment": per output step, the attention weights over the source
        pieces (see seq2seq.export_format.SIGNATURES). Separate functions, so that decoding
        without alignment does none of its work.
        """
        ids = tf.TensorSpec([None, None], tf.int32, name="source_ids")
        scalar = tf.TensorSpec([], tf.int32)
        alpha = tf.TensorSpec([], tf.float32)
        functions = {
            fmt.GREEDY: (self.serve_greedy, [ids, scalar]),
            fmt.BEAM: (self.serve_beam, [ids, scalar, scalar, alpha]),
        }
        if self.attention is not None:
            functions[fmt.GREEDY_ALIGNED] = (self.serve_greedy_aligned, [ids, scalar])
            functions[fmt.BEAM_ALIGNED] = (self.serve_beam_aligned, [ids, scalar, scalar, alpha])
        return functions

    def serve_greedy(self, source_ids, max_length):
        return greedy_decode(self, source_ids, max_length)

    def serve_beam(self, source_ids, beam_size, max_length, length_penalty):
        return beam_search(self, source_ids, beam_size, max_length, length_penalty)

    def serve_greedy_aligned(self, source_ids, max_length):
        return greedy_decode(self, source_ids, max_length, alignment=True)

    def serve_beam_aligned(self, source_ids, beam_size, max_length, length_penalty):
        return beam_search(self, source_ids, beam_size, max_length, length_penalty, alignment=True)

    # --- training ---------------------------------------------------------------------------

    def compute_loss_sums(self, batch, training=False, label_smoothing=0.0):
        """(sum of token cross-entropies, number of target tokens) for one batch."""
        source_ids, decoder_input, target = batch
        logits = self((source_ids, decoder_input), training=training)
        return masked_cross_entropy(target, logits, label_smoothing)

    def get_config(self):
        return {
            **super().get_config(),
            "source_vocab_size": self.source_vocab_size,
            "target_vocab_size": self.target_vocab_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "layers": self.num_layers,
            "attention": self.attention_type,
            "reverse_source": self.reverse_source,
            "dropout": self.dropout_rate,
            "recurrent_dropout": self.recurrent_dropout,
            "bptt_truncation": self.bptt_truncation,
            "attention_scale": self.attention_scale,
            "copy": self.copy,
        }


def scatter_to_vocab(weights, ids, vocab_size: int):
    """weights (B, T, S) over positions holding the pieces ids (B, S) → (B, T, V): each
    position's weight added to its piece's entry (a piece seen twice gets both)."""
    shape = tf.shape(weights)
    b = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
    t = tf.broadcast_to(tf.range(shape[1])[None, :, None], shape)
    s = tf.broadcast_to(ids[:, None, :], shape)
    indices = tf.stack([b, t, s], axis=-1)  # (B, T, S, 3)
    return tf.scatter_nd(indices, weights, [shape[0], shape[1], vocab_size])


def masked_cross_entropy(target, logits, label_smoothing=0.0):
    """Sum of per-token cross-entropies over non-PAD targets, and their count."""
    mask = tf.cast(tf.not_equal(target, PAD), tf.float32)
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        labels = tf.one_hot(target, tf.shape(logits)[-1])
        ce = tf.nn.softmax_cross_entropy_with_logits(
            labels * (1 - label_smoothing)
            + label_smoothing / tf.cast(tf.shape(logits)[-1], tf.float32),
            logits,
        )
    else:
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(target, logits)
    return tf.reduce_sum(ce * mask), tf.reduce_sum(mask)
