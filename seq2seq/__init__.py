"""seq2seq: an explicit-BPTT SimpleRNN for Keras 3 and the models, training and export built on it.

Importing the package sets KERAS_BACKEND=tensorflow unless the user chose otherwise.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
