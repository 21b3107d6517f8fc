"""Classifier: embedding + stacked SimpleRNN; the state at the last real step → dense → softmax."""

from __future__ import annotations

import keras
import tensorflow as tf

from seq2seq import export_format as fmt
from seq2seq.export_format import PAD
from seq2seq.layers import SimpleRNN


@keras.saving.register_keras_serializable(package="seq2seq")
class Classifier(keras.Model):
    """Many-to-one sequence classifier (seed 000's o_τ: only the last real step is read).

    Masked (padded) steps carry the state forward, so the final state of each SimpleRNN is the
    state at that sequence's last real token: padding cannot change the prediction.

    Args:
        vocab_size: SentencePiece vocabulary size.
        num_classes: number of labels.
        embedding_dim, units, layers: widths and depth.
        bidirectional: also read each sequence backwards; the two final states are concatenated.
        dropout: on embeddings, between layers and before the output layer.
        recurrent_dropout, bptt_truncation: passed to every SimpleRNN.
        activation: the SimpleRNN nonlinearity, "tanh" or "relu".
        recurrent_initializer: "orthogonal" or "identity" (W_hh = I: at the start the state
            adds up the projected inputs instead of mixing them). relu + identity is the
            IRNN of Le et al. (2015): an unsaturated state that carries what it read to the
            last step, and gradients that neither vanish nor explode through it at first.
        adversarial: training only: ε of adversarial training on the embeddings (Goodfellow
            et al. 2015; Miyato et al. 2017): loss = CE(e) + CE(e + r), where r moves each
            example's embeddings e by ε·‖e‖ along the gradient of its loss — the small change
            of wording-in-vector-space that hurts most. 0: off.

    Call arguments:
        token_ids: (B, T) int32, PAD-padded.
        training: whether dropout applies.

    Returns:
        logits (B, num_classes).
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 128,
        units: int = 128,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        bptt_truncation: int | None = None,
        activation: str = "tanh",
        recurrent_initializer: str = "orthogonal",
        adversarial: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if recurrent_initializer not in ("orthogonal", "identity"):
            raise ValueError(
                "recurrent_initializer must be 'orthogonal' or 'identity'; received "
                f"{recurrent_initializer!r}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; received {num_classes}")
        self.vocab_size = vocab_size
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.units = units
        self.num_layers = layers
        self.bidirectional = bidirectional
        self.dropout_rate = dropout
        self.recurrent_dropout = recurrent_dropout
        self.bptt_truncation = bptt_truncation
        self.activation = activation
        self.recurrent_initializer = recurrent_initializer
        if adversarial < 0:
            raise ValueError(f"adversarial must be >= 0; received {adversarial}")
        self.adversarial = adversarial
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")

        def stack(prefix, backwards):
            return [
                SimpleRNN(
                    units,
                    activation=activation,
                    recurrent_initializer=recurrent_initializer,
                    return_sequences=i + 1 < layers,
                    go_backwards=backwards and i == 0,
                    recurrent_dropout=recurrent_dropout,
                    bptt_truncation=bptt_truncation,
                    name=f"{prefix}_{i}",
                )
                for i in range(layers)
            ]

        self.forward_layers = stack("forward", False)
        self.backward_layers = stack("backward", True) if bidirectional else []
        self.dropout = keras.layers.Dropout(dropout)
        self.output_layer = keras.layers.Dense(num_classes, name="output")

    def _read(self, x, mask, layers, training):
        for i, layer in enumerate(layers):
            if i == 1 and layers[0].go_backwards:
                mask = tf.reverse(mask, [1])  # outputs of a go_backwards layer are reversed
            x = layer(x, mask=mask, training=training)
            if i + 1 < len(layers):
                x = self.dropout(x, training=training)
        return x  # (B, N): the state at the last real step (masked steps carry it to the end)

    def _states(self, token_ids, training, embedded=None):
        mask = tf.not_equal(token_ids, PAD)
        if embedded is None:
            embedded = self.embedding(token_ids)
        x = self.dropout(embedded, training=training)  # (B, T, E)
        reads = [self._read(x, mask, self.forward_layers, training)]
        if self.backward_layers:
            reads.append(self._read(x, mask, self.backward_layers, training))
        return reads

    def _head(self, reads, training):
        """Logits (B, C) from the final states of every reading direction."""
        h = tf.concat(reads, axis=-1)
        return self.output_layer(self.dropout(h, training=training))

    def call(self, token_ids, training=False):
        return self._head(self._states(token_ids, training), training)  # (B, C)

    def serving_functions(self, temperature: float = 1.0) -> dict:
        """{signature name: (function, input signature)}: what `seq2seq.inference` calls and
        `seq2seq.export` writes. `classify` returns {"probabilities": (B, C) float32, softmax of
        the logits divided by `temperature` (seq2seq.calibration), and "logits": (B, C) float32,
        before it}."""
        ids = tf.TensorSpec([None, None], tf.int32, name="token_ids")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

        def serve_classify(token_ids):
            logits = tf.cast(self(token_ids), tf.float32)
            return {
                "probabilities": tf.nn.softmax(logits / temperature),
                "logits": logits,
            }

        return {fmt.CLASSIFY: (serve_classify, [ids])}

    def _logits(self, token_ids, training, embedded=None):
        """float32 logits, optionally from given (e.g. perturbed) embeddings."""
        reads = self._states(token_ids, training, embedded)
        return tf.cast(self._head(reads, training), tf.float32)

    def adversarial_perturbation(self, token_ids, labels, embedded, training=True):
        """r = ε·‖e‖·g/‖g‖ per example, g = ∂CE/∂e: the embedding shift that raises the loss
        fastest, as large as ε times the example's own embeddings (real steps only, so that
        growing the embeddings cannot make the attack small). g comes from the same explicit
        BPTT backward pass as the weight gradients (its δx)."""
        with tf.GradientTape() as tape:
            tape.watch(embedded)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels, self._logits(token_ids, training, embedded)
            )
            total = tf.reduce_sum(ce)
        g = tf.stop_gradient(tape.gradient(total, embedded))
        real = tf.cast(tf.not_equal(token_ids, PAD), embedded.dtype)[:, :, None]
        size = tf.norm(tf.stop_gradient(embedded) * real, axis=[1, 2], keepdims=True)
        norm = tf.norm(g * real, axis=[1, 2], keepdims=True)
        return self.adversarial * size * g * real / tf.maximum(norm, 1e-12), ce

    def _adversarial_ce(self, token_ids, labels):
        """Per example CE(e) + CE(e + r) (Goodfellow et al. 2015; Miyato et al. 2017)."""
        e = self.embedding(token_ids)
        r, ce = self.adversarial_perturbation(token_ids, labels, e)
        ce_adv = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, self._logits(token_ids, True, e + r)
        )
        return ce + ce_adv

    def compute_loss_sums(self, batch, training=False, class_weights=None):
        """(sum of example cross-entropies, number of examples) for one batch."""
        token_ids, labels = batch
        if training and self.adversarial > 0:
            ce = self._adversarial_ce(token_ids, labels)
        else:
            logits = tf.cast(self(token_ids, training=training), tf.float32)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        if class_weights is not None:
            ce = ce * tf.gather(class_weights, labels)
        return tf.reduce_sum(ce), tf.cast(tf.size(labels), tf.float32)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "dropout": self.dropout_rate,
            "recurrent_dropout": self.recurrent_dropout,
            "bptt_truncation": self.bptt_truncation,
            "activation": self.activation,
            "recurrent_initializer": self.recurrent_initializer,
            "adversarial": self.adversarial,
        }
