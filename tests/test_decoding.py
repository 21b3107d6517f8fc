"""Greedy and beam search on a scripted model whose next-token probabilities are fixed, so that
every score can be computed by hand: the length penalty's effect on ranking, and hypotheses cut
at max_length."""

import math

import numpy as np
import pytest
import tensorflow as tf

from seq2seq.decoding import beam_search, greedy_decode, length_normalize
from seq2seq.export_format import EOS, PAD, SOS

A = 4  # the one real token; the vocabulary is PAD, UNK, SOS, EOS, A
VOCAB = 5


class Scripted:
    """After SOS: EOS 0.4, A 0.6. After A: EOS `eos_after_a`, A the rest."""

    target_vocab_size = VOCAB

    def __init__(self, eos_after_a=0.5, eos_first=0.4):
        self.eos_after_a, self.eos_first = eos_after_a, eos_first

    def encode(self, source_ids):
        batch = tf.shape(source_ids)[0]
        memory = tf.zeros([batch, tf.shape(source_ids)[1], 2])
        return memory, tf.not_equal(source_ids, PAD), [tf.zeros([batch, 2])]

    def attention_keys(self, memory):
        return None

    def memory_ids(self, source_ids):
        return source_ids

    def _row(self, eos):
        p = [1e-12, 1e-12, 1e-12, eos, 1.0 - eos]
        return tf.math.log(tf.constant(p, tf.float32))

    def step(self, tokens, states, memory, memory_mask, keys=None, memory_ids=None):
        first, later = self._row(self.eos_first), self._row(self.eos_after_a)
        logits = tf.where(tf.equal(tokens, SOS)[:, None], first[None], later[None])
        return logits, states, None


SOURCE = np.array([[5, 6]], np.int32)


def test_the_length_penalty_changes_which_hypothesis_ranks_first():
    # [EOS]: log 0.4 = -0.916 (1 token); [A EOS]: log 0.6 + log 0.5 = -1.204 (2 tokens)
    raw = beam_search(Scripted(), SOURCE, beam_size=3, max_length=4, length_penalty=0.0)
    assert raw["ids"][0, 0, 0].numpy() == EOS  # the short one wins on raw log-probability
    assert raw["scores"][0, 0].numpy() == pytest.approx(math.log(0.4), abs=1e-5)
    # alpha 2: [EOS] stays -0.916 ((5+1)/6)^2 = 1), [A EOS] becomes -1.204 / (7/6)^2 = -0.885
    long = beam_search(Scripted(), SOURCE, beam_size=3, max_length=4, length_penalty=2.0)
    assert list(long["ids"][0, 0, :2].numpy()) == [A, EOS]
    want = (math.log(0.6) + math.log(0.5)) / (7 / 6) ** 2
    assert long["scores"][0, 0].numpy() == pytest.approx(want, abs=1e-5)
    assert long["scores"][0, 1].numpy() == pytest.approx(math.log(0.4), abs=1e-5)
    # the scores are length_normalize of the raw log-probabilities, best first
    assert length_normalize(tf.constant(-1.0), tf.constant(3), 1.0).numpy() == pytest.approx(
        -1.0 / (8 / 6)
    )
    assert np.all(np.diff(long["scores"][0].numpy()) <= 0)


def test_a_hypothesis_that_never_ends_is_cut_at_max_length():
    never = Scripted(eos_after_a=1e-9, eos_first=1e-9)
    out = greedy_decode(never, SOURCE, max_length=6)
    assert out["ids"].shape == (1, 6)
    assert list(out["ids"][0].numpy()) == [A] * 6  # no EOS: cut, not ended
    assert int(out["lengths"][0]) == 6
    assert out["scores"][0].numpy() == pytest.approx(6 * math.log(1 - 1e-9), abs=1e-5)
    beam = beam_search(never, SOURCE, beam_size=2, max_length=6, length_penalty=0.6)
    assert beam["ids"].shape[-1] == 6 and int(beam["lengths"][0, 0]) == 6
    assert EOS not in beam["ids"][0, 0].numpy()


def test_greedy_stops_early_once_every_sentence_has_ended():
    out = greedy_decode(Scripted(eos_first=0.9), np.array([[5], [6]], np.int32), max_length=30)
    assert out["ids"].shape == (2, 1)  # one step: both chose EOS at once
    assert list(out["lengths"].numpy()) == [1, 1]
