"""`make bench-rnn`: training-step time and peak memory of our SimpleRNN against Keras's.

Everything is measured in this one process and run, and reported as ratios against anchors
measured in the same run (a 2048³ matmul for GFLOP/s, Keras's layer for time and memory), since
absolute times on shared machines are noise.

A training step is forward + backward + the weight gradients of loss = sum(outputs) with
return_sequences=True. Times are taken in this process. Peak memory is measured in a child
process per setting (the same module, `--memory-of`) that runs TensorFlow's BFC allocator on the
CPU (TF_CPU_ALLOCATOR_USE_BFC=true) so its exact allocation statistics are available: the peak
bytes allocated during one warmed-up step above what was allocated before it. The allocator
is swapped only in the children, so the timings use TensorFlow's default CPU allocator.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SHAPES = [(64, 50, 256, 512), (32, 30, 128, 128), (128, 20, 64, 1024)]
TARGETS = {(64, 50, 256, 512): 1.5}  # Keras-best / ours; every other shape: 1.3


def _time_interleaved(fns: dict, rounds: int, min_seconds: float) -> dict:
    """Median seconds per call of each function, timed in interleaved rounds so that drift in
    the machine's speed hits every setting alike. Each function is warmed up twice first."""
    for fn in fns.values():
        fn()
        fn()
    times: dict = {key: [] for key in fns}
    start = time.perf_counter()
    while min(map(len, times.values())) < rounds or time.perf_counter() - start < min_seconds:
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(v) for key, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="minimum timed rounds per shape")
    parser.add_argument("--seconds", type=float, default=10.0, help="minimum seconds per shape")
    parser.add_argument("--shapes", default=None, help="B,T,D,N;B,T,D,N… (default: the three)")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or not args.seconds > 0:
        parser.error(f"--rounds must be ≥ 1 and --seconds > 0, got {args.rounds}, {args.seconds}")
    shapes = SHAPES
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s]
        except ValueError:
            shapes = []
        if not shapes or any(len(s) != 4 or min(s) < 1 for s in shapes):
            parser.error(
                f"--shapes must be B,T,D,N groups of four integers ≥ 1 separated by ';', "
                f"e.g. 64,50,128,128; got {args.shapes!r}"
            )

    import keras
    import tensorflow as tf

    from seq2seq.layers import SimpleRNN

    def make_step(impl: str, jit: bool, shape):
        b, t, d, n = shape
        keras.utils.set_random_seed(0)
        layer = (SimpleRNN if impl == "ours" else keras.layers.SimpleRNN)(n, return_sequences=True)
        layer.build((b, t, d))
        x = tf.random.normal([b, t, d])

        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(loss, layer.trainable_variables)

        return lambda: [g.numpy() for g in step(x)]

    if args.memory_of:  # child process: print the peak MiB of one step
        impl, jit, *shape = args.memory_of.split(",")
        run = make_step(impl, jit == "1", tuple(int(v) for v in shape))
        run()
        run()
        tf.config.experimental.reset_memory_stats("CPU:0")
        base = tf.config.experimental.get_memory_info("CPU:0")["current"]
        run()
        print((tf.config.experimental.get_memory_info("CPU:0")["peak"] - base) / 2**20)
        return 0

    def peak_mib(impl: str, jit: bool, shape) -> float:
        env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}
        spec = ",".join([impl, "1" if jit else "0", *map(str, shape)])
        out = subprocess.run(
            [sys.executable, "-m", "seq2seq.bench_rnn", "--memory-of", spec],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            return float(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return float("nan")

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    a = tf.random.normal([2048, 2048])
    mm = tf.function(lambda: tf.matmul(a, a))
    t_mm = _time_interleaved({"mm": lambda: mm().numpy()}, 5, 2.0)["mm"]
    mm_gflops = 2 * 2048**3 / t_mm / 1e9
    print(f"anchor: 2048³ float32 matmul {t_mm * 1e3:.1f} ms = {mm_gflops:.1f} GFLOP/s\n")

    header = (
        f"{'B,T,D,N':>18} {'layer':>6} {'jit':>5} {'ms/step':>9} {'GFLOP/s':>8} {'peak MiB':>9}"
    )
    summary = []
    for b, t, d, n in shapes:
        # forward 2BT(DN + N²); backward: ∂kernel 2BTDN, ∂recurrent_kernel and the carry 4BTN²
        # (no input gradient: the inputs are constants, and TensorFlow prunes it)
        flops = 4 * b * t * d * n + 6 * b * t * n * n
        print(header)
        settings = [(impl, jit) for impl in ("ours", "keras") for jit in (False, True)]
        steps = {key: make_step(*key, (b, t, d, n)) for key in settings}
        secs_of = _time_interleaved(steps, args.rounds, args.seconds)
        results = {}
        for impl, jit in settings:
            secs = secs_of[(impl, jit)]
            peak = peak_mib(impl, jit, (b, t, d, n))
            results[(impl, jit)] = (secs, peak)
            print(
                f"{f'{b},{t},{d},{n}':>18} {impl:>6} {str(jit):>5} {secs * 1e3:9.2f} "
                f"{flops / secs / 1e9:8.1f} {peak:9.1f}"
            )
        ours_t, ours_mem = results[("ours", False)]
        keras_best = min((results[("keras", j)] for j in (False, True)), key=lambda r: r[0])
        keras_mem = min(results[("keras", j)][1] for j in (False, True))
        ratio = keras_best[0] / ours_t
        target = TARGETS.get((b, t, d, n), 1.3)
        eff = flops / ours_t / 1e9 / mm_gflops
        summary.append(((b, t, d, n), ratio, target, eff, ours_mem, keras_mem))
        print()

    print("summary (ours = default setting, no jit; Keras-best = faster of its two settings)")
    print(
        f"{'B,T,D,N':>18} {'Keras-best/ours':>16} {'target':>7} {'GFLOP/s vs matmul':>18} "
        f"{'peak MiB ours':>14} {'Keras (lower)':>14}"
    )
    for shape, ratio, target, eff, om, km in summary:
        print(
            f"{','.join(map(str, shape)):>18} {ratio:15.2f}x {target:6.1f}x {eff:17.0%} "
            f"{om:14.1f} {km:14.1f}  time {'ok' if ratio >= target else 'BELOW TARGET'}, "
            f"memory {'ok' if om < km else 'ABOVE KERAS'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
