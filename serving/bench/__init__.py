"""Benchmark tools: `python -m serving.bench` (`make bench-serve`, in `throughput`) and the
load generator `python -m serving.bench.loadgen` (client only: it may run on another machine)."""
