"""`make bench-decode`: in-process decoding throughput of exported translators.

Loads each SavedModel the way the server does (TensorFlow alone, `ExportedModel`) and translates
the same sentences greedily and with beam 5, one sentence per call (batch 1) and 32 per call,
timed in interleaved rounds so that drift in the machine's speed hits every setting alike. With
several models (e.g. the same weights exported before and after a change) each row also gives
the ratio against the first model, measured in this same run: the figure to trust, since
absolute times on shared machines are noise. A 2048³ matmul timed in the same run is printed as
the machine's anchor.

"Where the time goes" splits one 32-sentence call into tokenisation (SentencePiece both ways),
the encoder plus the first decoder step (a call with max_length 1) and the further decoder steps
(the rest), with the time of one further step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

DECODINGS = {"greedy": 1, "beam 5": 5}
BATCHES = (1, 32)


def _median_time(fn, rounds: int) -> float:
    fn()  # warm-up: the first call of a shape pays for graph set-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sentences(path: Path | None, count: int) -> list[str]:
    if path is None:
        path = Path("data/prepared/translate/tatoeba_spa_eng/test.tsv")
    if not path.is_file():
        raise SystemExit(
            f"bench-decode: no sentences at {path}: run `make data-translate`, or give "
            f"--sentences-file FILE (one source sentence per line; a TAB ends it)"
        )
    lines = path.read_text().splitlines()
    if lines and lines[0].startswith("source\t"):  # the prepared splits' header
        lines = lines[1:]
    rows = [line.split("\t", 1)[0].strip() for line in lines]
    rows = [r for r in rows if r][:count]
    if not rows:
        raise SystemExit(f"bench-decode: {path} holds no sentences")
    return rows


def _latest(repository: Path) -> Path:
    from seq2seq.export_format import versions

    found = versions(repository) if repository.is_dir() else []
    if not found:
        raise SystemExit(
            f"bench-decode: no exported translator under {repository}: run `make "
            f"export-translate` (or `make serve`), or give --model PATH"
        )
    return repository / str(found[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        default=None,
        help="an exported version folder; repeat to compare (default: the newest under "
        "--repository)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("models/translate"),
        help="where the newest version is taken from when no --model is given",
    )
    parser.add_argument("--sentences-file", type=Path, default=None)
    parser.add_argument("--sentences", type=int, default=64, help="how many (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per setting")
    args = parser.parse_args(argv)
    if args.sentences < 1 or args.rounds < 1:
        parser.error("--sentences and --rounds must be ≥ 1")
    paths = [Path(p) for p in args.model] if args.model else [_latest(args.repository)]
    texts = _sentences(args.sentences_file, args.sentences)

    import tensorflow as tf

    from seq2seq import export_format as fmt
    from seq2seq.inference import ExportedModel

    models = []
    for path in paths:
        try:
            model = ExportedModel(path, task="translate")
        except (FileNotFoundError, ValueError, OSError) as err:
            raise SystemExit(f"bench-decode: {err}") from None
        model.warm_up()
        models.append((str(path), model.runner))

    a = tf.random.normal([2048, 2048])
    mm = tf.function(lambda: tf.matmul(a, a))
    t_mm = _median_time(lambda: mm().numpy(), 5)
    print(f"TensorFlow {tf.__version__}; {len(texts)} test sentences; models: ")
    for i, (name, _) in enumerate(models):
        print(f"  [{i}] {name}")
    print(
        f"anchor: 2048³ float32 matmul {t_mm * 1e3:.1f} ms = {2 * 2048**3 / t_mm / 1e9:.1f} GFLOP/s"
    )

    print(f"\n{'decoding':>8} {'batch':>5} {'model':>5} {'sentences/s':>12} {'vs [0]':>7}")
    for name, beam in DECODINGS.items():
        decoding = fmt.Decoding(beam, fmt.DEFAULT_MAX_LENGTH, fmt.DEFAULT_LENGTH_PENALTY)
        for batch in BATCHES:
            calls = {
                i: (lambda r=runner, b=batch, d=decoding: r.run(texts, d, batch_size=b))
                for i, (_, runner) in enumerate(models)
            }
            for fn in calls.values():
                fn()
            times: dict = {i: [] for i in calls}
            for _ in range(args.rounds):  # interleaved rounds
                for i, fn in calls.items():
                    t0 = time.perf_counter()
                    fn()
                    times[i].append(time.perf_counter() - t0)
            first = statistics.median(times[0])
            for i in calls:
                secs = statistics.median(times[i])
                print(
                    f"{name:>8} {batch:>5} {f'[{i}]':>5} {len(texts) / secs:12.1f} "
                    f"{first / secs:6.2f}x"
                )

    print("\nwhere the time goes: one call of 32 sentences (ms)")
    print(
        f"{'decoding':>8} {'model':>5} {'tokenise':>9} {'encode+1st':>11} {'more steps':>11} "
        f"{'steps':>6} {'ms/step':>8}"
    )
    chunk = texts[:32]
    for name, beam in DECODINGS.items():
        for i, (_, runner) in enumerate(models):
            src = fmt.input_ids(runner.source.encode_batch(chunk), runner.max_input_tokens)
            full = fmt.Decoding(beam, fmt.DEFAULT_MAX_LENGTH, fmt.DEFAULT_LENGTH_PENALTY)
            one = fmt.Decoding(beam, 1, fmt.DEFAULT_LENGTH_PENALTY)
            out = runner._decode(src, full, False)
            steps = int(out["ids"].shape[-1])

            def tokenise(r=runner, o=out):
                ids = fmt.input_ids(r.source.encode_batch(chunk), r.max_input_tokens)
                [r.target.decode(row[0]) for row in o["ids"]]
                return ids

            t_tok = _median_time(tokenise, args.rounds)
            t_one = _median_time(lambda r=runner, s=src, d=one: r._decode(s, d, False), args.rounds)
            t_full = _median_time(
                lambda r=runner, s=src, d=full: r._decode(s, d, False), args.rounds
            )
            rest = max(t_full - t_one, 0.0)
            per = rest / max(steps - 1, 1)
            print(
                f"{name:>8} {f'[{i}]':>5} {t_tok * 1e3:9.1f} {t_one * 1e3:11.1f} "
                f"{rest * 1e3:11.1f} {steps:6d} {per * 1e3:8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
