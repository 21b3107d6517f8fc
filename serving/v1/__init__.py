"""Generated protocol code for seq2seq.serving.v1 (`make protos`; never edit by hand)."""
