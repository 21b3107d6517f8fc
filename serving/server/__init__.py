"""The server process (`python -m serving`): settings (`config`), exported models and their
versions (`predictor`), dynamic batching (`batching`), protobuf ↔ Python (`servicer`), TLS and
tokens (`security`), Prometheus metrics (`metrics`), and the process itself (`main`)."""
