"""Tasks end to end (data → tokenizers → model → train → evaluate → export): translation and
classification, on the shared machinery of seq2seq.data, seq2seq.training and seq2seq.export."""
