"""serving: the gRPC service for the exported models, in three parts that install apart.

- `serving.client`: what a client installs (grpcio + protobuf only, no TensorFlow): the
  `Client` library and the `seq2seq-client` command.
- `serving.server`: what runs in the server process (`python -m serving`): settings, the
  predictor over the exported SavedModels, dynamic batching, the servicer, TLS/auth, metrics.
- `serving.bench`: `make bench-serve` and its load generator.
- `serving.v1`: the protobuf/gRPC code generated from protos/ (`make protos`), used by both.
"""
