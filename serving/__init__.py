"""serving: the gRPC service, its generated protocol code and a TensorFlow-free client."""
