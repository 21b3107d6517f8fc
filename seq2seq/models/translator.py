"""Translator: embedding + stacked SimpleRNN encoder, decoder initialised with the encoder's final
states, optional Luong attention, projection to the target vocabulary."""

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

    Call arguments:
        inputs: (source_ids (B, S), decoder_input (B, T)), int32, PAD-padded.
        training: whether dropout applies.

    Returns:
        logits (B, T, target_vocab_size).
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        if attention not in ("none", "luong"):
            raise ValueError(f"attention must be 'none' or 'luong'; received {attention!r}")
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

    def encode(self, source_ids, training=False):
        """Returns (memory (B, S, N), memory mask (B, S), final states: one (B, N) per layer)."""
        mask = tf.not_equal(source_ids, PAD)
        if self.reverse_source:
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
            source_ids = tf.reverse_sequence(source_ids, lengths, seq_axis=1, batch_axis=0)
        x = self.dropout(self.source_embedding(source_ids), training=training)  # (B, S, E)
        states = []
        for i, layer in enumerate(self.encoder_layers):
            x, h = layer(x, mask=mask, training=training)  # (B, S, N), (B, N)
            states.append(h)
            if i + 1 < len(self.encoder_layers):
                x = self.dropout(x, training=training)
        return x, mask, states

    def call(self, inputs, training=False):
        source_ids, decoder_input = inputs
        memory, memory_mask, states = self.encode(source_ids, training=training)
        mask = tf.not_equal(decoder_input, PAD)
        y = self.dropout(self.target_embedding(decoder_input), training=training)  # (B, T, E)
        for i, layer in enumerate(self.decoder_layers):
            y, _ = layer(y, initial_state=states[i], mask=mask, training=training)  # (B, T, N)
            if i + 1 < len(self.decoder_layers):
                y = self.dropout(y, training=training)
        if self.attention is not None:
            y, _ = self.attention(y, memory, memory_mask)
        return self.projection(self.dropout(y, training=training))  # (B, T, V)

    def attention_keys(self, memory):
        return None if self.attention is None else self.attention.keys(memory)

    def step(self, tokens, states, memory, memory_mask, keys=None):
        """One decoding step: tokens (B,) → (logits (B, V), new states, attention weights
        (B, S) over the memory, or None without attention)."""
        y = self.target_embedding(tokens)  # (B, E)
        new_states = []
        for layer, h in zip(self.decoder_layers, states, strict=True):
            y, [h] = layer.cell(y, [h])  # (B, N)
            new_states.append(h)
        weights = None
        if self.attention is not None:
            y, weights = self.attention(y[:, None, :], memory, memory_mask, keys=keys)
            y, weights = y[:, 0, :], weights[:, 0, :]
        return self.projection(y), new_states, weights

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
        }


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
