"""Keras layers: the explicit-BPTT SimpleRNN, its one-step cell, and Luong attention."""

from seq2seq.layers.attention import LuongAttention
from seq2seq.layers.simple_rnn import SimpleRNN, SimpleRNNCell

__all__ = ["LuongAttention", "SimpleRNN", "SimpleRNNCell"]
