"""Greedy and beam-search decoding for `Translator`, as graph code (`tf.while_loop`), so both
ship inside the exported SavedModel. Outputs end with EOS and are PAD-filled after it."""

from __future__ import annotations

import tensorflow as tf

from seq2seq.export_format import EOS, PAD, SOS


def step_log_probs(model, logits):
    """log P(next token) from a step's logits: a copying model's are log-probabilities already
    (a normalised mixture), which saves a vocabulary-wide log-softmax per step."""
    logits = tf.cast(logits, tf.float32)
    return logits if getattr(model, "copy", False) else tf.nn.log_softmax(logits)


def greedy_decode(model, source_ids, max_length, alignment=False):
    """Most likely next token at every step.

    Returns {"ids": (B, L) int32 with L ≤ max_length, "lengths": (B,) tokens up to and
    including EOS, "scores": (B,) the sum of the chosen tokens' log-probabilities}, and with
    `alignment` (a model with attention) "alignment": (B, L, S), row t the attention over the
    source pieces (in reading order) at the step that produced token t.
    """
    source_ids = tf.convert_to_tensor(source_ids, tf.int32)
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    memory, memory_mask, states = model.encode(source_ids)
    keys = model.attention_keys(memory)
    memory_ids = model.memory_ids(source_ids)
    batch = tf.shape(source_ids)[0]
    tokens = tf.fill([batch], SOS)
    finished = tf.zeros([batch], tf.bool)
    scores = tf.zeros([batch], tf.float32)
    lengths = tf.zeros([batch], tf.int32)
    out = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
    # (B, S) per step; a 0-wide placeholder when alignment is off (nothing is computed)
    width = tf.shape(source_ids)[1] if alignment else 0
    attn = tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[None, None])

    def cond(t, tokens, states, finished, scores, lengths, out, attn):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(t, tokens, states, finished, scores, lengths, out, attn):
        logits, states, weights = model.step(tokens, states, memory, memory_mask, keys, memory_ids)
        log_probs = step_log_probs(model, logits)  # (B, V)
        nxt = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        nxt = tf.where(finished, PAD, nxt)
        gained = tf.gather(log_probs, nxt, batch_dims=1)
        scores += tf.where(finished, 0.0, gained)
        lengths += tf.cast(tf.logical_not(finished), tf.int32)
        finished = tf.logical_or(finished, tf.equal(nxt, EOS))
        if alignment:
            attn = attn.write(t, tf.cast(weights, tf.float32))
        return t + 1, nxt, states, finished, scores, lengths, out.write(t, nxt), attn

    *_, scores, lengths, out, attn = tf.while_loop(
        cond, body, (tf.constant(0), tokens, states, finished, scores, lengths, out, attn)
    )
    ids = tf.transpose(out.stack())  # (B, L)
    ids = tf.reshape(ids, [batch, -1])
    result = {"ids": ids, "lengths": lengths, "scores": scores}
    if alignment:
        weights = tf.reshape(tf.transpose(attn.stack(), [1, 0, 2]), [batch, -1, width])
        result["alignment"] = model.source_order(weights, source_ids)  # (B, L, S)
    return result


def length_normalize(log_probs, lengths, alpha):
    """GNMT length penalty: log p / ((5 + |y|) / 6)^alpha (alpha = 0: raw log-probability)."""
    penalty = tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)
    return log_probs / penalty


def beam_search(model, source_ids, beam_size, max_length, length_penalty=0.0, alignment=False):
    """Beam search keeping `beam_size` hypotheses per sentence.

    Finished hypotheses stay in the beam with their score frozen (they may only be extended by
    PAD at no cost) and compete with unfinished ones on raw log-probability; the final n-best
    list is ranked by the length-normalised score.

    A sentence stops early, its whole beam frozen, once no unfinished hypothesis can still beat
    its best finished one: extending a hypothesis only lowers its log-probability (< 0), and the
    GNMT penalty is largest at max_length, so raw / penalty(max_length) bounds the normalised
    score any continuation can reach. The best hypothesis is therefore the one a search run to
    max_length would return; the frozen unfinished ones rank below it.

    Returns {"ids": (B, K, L) int32, "lengths": (B, K), "scores": (B, K) length-normalised
    log-probabilities}, best first; with `alignment`, "alignment": (B, K, L, S), each
    hypothesis's own attention rows (carried along its back-pointers, like its tokens).
    """
    source_ids = tf.convert_to_tensor(source_ids, tf.int32)
    k = tf.convert_to_tensor(beam_size, tf.int32)
    max_length = tf.convert_to_tensor(max_length, tf.int32)
    alpha = tf.cast(length_penalty, tf.float32)
    batch = tf.shape(source_ids)[0]
    width = tf.shape(source_ids)[1] if alignment else 0
    memory, memory_mask, states = model.encode(source_ids)
    memory = tf.repeat(memory, k, axis=0)  # (B·K, S, N)
    memory_mask = tf.repeat(memory_mask, k, axis=0)
    memory_ids = tf.repeat(model.memory_ids(source_ids), k, axis=0)
    states = [tf.repeat(s, k, axis=0) for s in states]
    keys = model.attention_keys(memory)
    vocab = model.target_vocab_size
    neg_inf = tf.constant(-1e9, tf.float32)

    first = tf.concat([[0.0], tf.fill([k - 1], neg_inf)], axis=0)  # only beam 0 starts alive
    log_probs = tf.tile(first[None], [batch, 1])  # (B, K)
    tokens = tf.fill([batch * k], SOS)
    finished = tf.zeros([batch, k], tf.bool)
    lengths = tf.zeros([batch, k], tf.int32)
    seqs = tf.zeros([batch, k, 0], tf.int32)
    attn = tf.zeros([batch, k, 0, width], tf.float32)  # 0 wide when alignment is off
    pad_only = tf.where(tf.range(vocab) == PAD, 0.0, neg_inf)  # (V,): a finished beam's row
    offsets = (tf.range(batch) * k)[:, None]  # (B, 1)

    def cond(t, tokens, states, log_probs, finished, lengths, seqs, attn):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))

    best_penalty = tf.pow((5.0 + tf.cast(max_length, tf.float32)) / 6.0, alpha)

    def body(t, tokens, states, log_probs, finished, lengths, seqs, attn):
        logits, states, weights = model.step(tokens, states, memory, memory_mask, keys, memory_ids)
        step = tf.reshape(step_log_probs(model, logits), [batch, k, vocab])
        step = tf.where(finished[:, :, None], pad_only, step)
        total = tf.reshape(log_probs[:, :, None] + step, [batch, k * vocab])
        log_probs, idx = tf.math.top_k(total, k=k)  # (B, K)
        parent, token = idx // vocab, idx % vocab
        seqs = tf.concat([tf.gather(seqs, parent, batch_dims=1), token[:, :, None]], axis=2)
        if alignment:
            rows = tf.reshape(tf.cast(weights, tf.float32), [batch, k, 1, width])
            rows = tf.gather(rows, parent, batch_dims=1)  # the parent's step produced `token`
            attn = tf.concat([tf.gather(attn, parent, batch_dims=1), rows], axis=2)
        parent_finished = tf.gather(finished, parent, batch_dims=1)
        lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(
            tf.logical_not(parent_finished), tf.int32
        )
        finished = tf.logical_or(parent_finished, tf.equal(token, EOS))
        # early stop: the best finished hypothesis (normalised) against the most any
        # unfinished one could still reach
        best_done = tf.reduce_max(
            tf.where(finished, length_normalize(log_probs, lengths, alpha), neg_inf), axis=1
        )  # (B,)
        reachable = log_probs / best_penalty  # (B, K)
        settled = tf.reduce_all(tf.logical_or(finished, reachable <= best_done[:, None]), axis=1)
        finished = tf.logical_or(finished, settled[:, None])
        flat_parent = tf.reshape(parent + offsets, [-1])
        states = [tf.gather(s, flat_parent) for s in states]
        return t + 1, tf.reshape(token, [-1]), states, log_probs, finished, lengths, seqs, attn

    state_shapes = [tf.TensorShape([None, s.shape[-1]]) for s in states]
    *_, log_probs, finished, lengths, seqs, attn = tf.while_loop(
        cond,
        body,
        (tf.constant(0), tokens, states, log_probs, finished, lengths, seqs, attn),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            state_shapes,
            tf.TensorShape([None, None]),
            tf.TensorShape([None, None]),
            tf.TensorShape([None, None]),
            tf.TensorShape([None, None, None]),
            tf.TensorShape([None, None, None, None]),
        ),
    )
    scores = length_normalize(log_probs, lengths, alpha)
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)
    result = {
        "ids": tf.gather(seqs, order, batch_dims=1),
        "lengths": tf.gather(lengths, order, batch_dims=1),
        "scores": tf.gather(scores, order, batch_dims=1),
    }
    if alignment:
        result["alignment"] = model.source_order(tf.gather(attn, order, batch_dims=1), source_ids)
    return result
