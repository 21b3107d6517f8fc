"""Keras layers: the explicit-BPTT SimpleRNN and its one-step cell."""

from seq2seq.layers.simple_rnn import SimpleRNN, SimpleRNNCell

__all__ = ["SimpleRNN", "SimpleRNNCell"]
