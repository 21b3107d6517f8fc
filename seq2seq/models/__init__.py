"""Models on the explicit-BPTT SimpleRNN: Translator (encoder-decoder) and Classifier."""

from seq2seq.models.classifier import Classifier
from seq2seq.models.translator import Translator, masked_cross_entropy

__all__ = ["Classifier", "Translator", "masked_cross_entropy"]
