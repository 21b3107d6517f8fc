"""`seq2seq-client`: translate, classify or describe models on a seq2seq server.

Texts come from the arguments, or one per line from standard input when none are given (blank
lines are skipped); one line of output per text. Any number of texts: they go in requests of
the server's `max_texts`, all answered by the model version that answered the first. Needs only
grpcio and protobuf.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from serving.client import Client, ServingError


def _texts(args) -> list[str]:
    """The texts to send; ValueError names a text that is not UTF-8 (gRPC strings must be)."""
    if args.texts:
        for i, text in enumerate(args.texts, 1):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"argument text {i} is not valid UTF-8") from None
        return args.texts
    if sys.stdin.isatty():
        print("reading texts from standard input, one per line (Ctrl-D to end)", file=sys.stderr)
    texts = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ValueError(f"standard input line {number} is not valid UTF-8") from None
        if line.strip():
            texts.append(line)
    return texts


def _chunks(client: Client, texts: list[str]):
    """(first index, texts) in requests of at most the server's `max_texts` each (asked for
    only when there is more than one text), so that a file of any length can be piped in."""
    size = len(texts)
    if size > 1:
        size = client.metadata()["limits"].get("max_texts") or size
    for start in range(0, len(texts), size):
        yield start, texts[start : start + size]


SHADES = " ░▒▓█"  # attention weight in fifths


def heatmap(h) -> str:
    """A hypothesis's alignment as text: source pieces across, output pieces down, one shade
    character per cell (blank < 0.2 ≤ ░ < 0.4 ≤ ▒ < 0.6 ≤ ▓ < 0.8 ≤ █)."""
    widths = [max(2, len(p)) for p in h.source_tokens]
    left = max([len(p) for p in h.target_tokens] + [1])
    lines = [
        " " * left
        + " "
        + " ".join(p.center(w) for p, w in zip(h.source_tokens, widths, strict=True))
    ]
    for piece, row in zip(h.target_tokens, h.alignment, strict=True):
        cells = (SHADES[min(4, int(v * 5))].center(w) for v, w in zip(row, widths, strict=True))
        lines.append(piece.ljust(left) + " " + " ".join(cells))
    words = "  ".join(f"{t}←{s}" for t, s in h.word_alignment)
    return "\n".join([*lines, f"words: {words}"])


def _line(r, args) -> str:
    """The output line(s) for one result."""
    if args.json:
        if args.command == "translate":
            keep = ("text", "score")
            hypotheses = [
                {k: v for k, v in h.__dict__.items() if v or k in keep} for h in r.hypotheses
            ]
            fields = {"text": r.text, "score": r.score, "hypotheses": hypotheses}
            if r.confidence is not None:
                fields["confidence"] = round(r.confidence, 4)
            if r.sentences:
                fields["sentences"] = [
                    {"source": s.source, "text": s.hypothesis.text, "confidence": s.confidence}
                    for s in r.sentences
                ]
        else:
            fields = {"label": r.label, "probabilities": r.probabilities}
        fields["warnings"] = [{"code": w.code, "message": w.message} for w in r.warnings]
        if r.language is not None:
            fields["language"] = r.language.__dict__
        return json.dumps({**fields, "model_version": r.model_version}, ensure_ascii=False)
    if args.command == "classify":
        return r.label + "\t" + " ".join(f"{k}={v:.3f}" for k, v in r.probabilities.items())
    if getattr(args, "alignment", False):
        return "\n".join(f"{h.text} ({h.score:.3f})\n{heatmap(h)}\n" for h in r.hypotheses)
    if args.n_best > 1:
        return " ||| ".join(f"{h.text} ({h.score:.3f})" for h in r.hypotheses)
    return r.text


def _connection_options(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The options every command shares. The top-level parser holds the defaults; each command
    takes them too, without defaults, so that they may come before or after the command."""

    def default(value):
        return value if defaults else argparse.SUPPRESS

    p.add_argument(
        "--target",
        default=default(os.environ.get("SEQ2SEQ_TARGET", "localhost:50051")),
        help="server host:port (env SEQ2SEQ_TARGET; default localhost:50051)",
    )
    p.add_argument(
        "--timeout", type=float, default=default(60.0), help="deadline per call, seconds"
    )
    p.add_argument(
        "--token",
        default=default(os.environ.get("SEQ2SEQ_TOKEN")),
        help="bearer token (env SEQ2SEQ_TOKEN)",
    )
    p.add_argument(
        "--token-file", default=default(None), help="read the bearer token from this file"
    )
    p.add_argument(
        "--tls-ca", default=default(None), help="CA certificate (PEM) to connect with TLS"
    )
    p.add_argument(
        "--tls-server-name",
        default=default(None),
        help="name in the server's certificate, if not the host",
    )
    p.add_argument("--json", action="store_true", default=default(False), help="print JSON lines")


def main(argv=None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`… | head`): stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="seq2seq-client", description=__doc__.splitlines()[0])
    _connection_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("translate", help="translate texts")
    t.add_argument(
        "texts",
        nargs="*",
        help="source texts in the served model's language (default: one per standard input line)",
    )
    t.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="beam width; 1 decodes greedily (default: the model's, see `info`)",
    )
    t.add_argument(
        "--n-best", type=int, default=1, help="hypotheses per text, at most the beam width"
    )
    t.add_argument(
        "--alignment",
        action="store_true",
        help="show which source pieces each output piece attended to (a text heatmap)",
    )
    t.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="most pieces per translation (default: the model's, see `info`)",
    )
    c = sub.add_parser("classify", help="classify texts")
    c.add_argument("texts", nargs="*", help="texts (default: one per standard input line)")
    for s in (t, c):
        which = s.add_mutually_exclusive_group()
        which.add_argument(
            "--model-version",
            type=int,
            default=None,
            help="serve with this model version (default: the newest the server has loaded)",
        )
        which.add_argument(
            "--version-label",
            default=None,
            help="serve with the version this label names (e.g. stable, canary; see `info`)",
        )
    i = sub.add_parser("info", help="describe the served models and limits")
    for s in (t, c, i):
        _connection_options(s, defaults=False)
    args = p.parse_args(argv)
    token = args.token
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as err:
            p.error(f"cannot read --token-file {args.token_file}: {getattr(err, 'strerror', err)}")
        if not token:  # sending no token would come back as a puzzling UNAUTHENTICATED
            p.error(f"--token-file {args.token_file} is empty")
    if args.tls_ca and not os.path.isfile(args.tls_ca):
        p.error(f"--tls-ca {args.tls_ca}: no such file")
    try:
        client = Client(
            args.target,
            timeout=args.timeout,
            token=token,
            tls_ca=args.tls_ca,
            tls_server_name=args.tls_server_name,
        )
    except ValueError as err:  # the client library checks its settings
        p.error(f"--{err}")

    try:
        with client:
            if args.command == "info":
                print(json.dumps(client.metadata(), indent=2, ensure_ascii=False))
                return 0
            try:
                texts = _texts(args)
            except ValueError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            if not texts:
                print("error: no texts given", file=sys.stderr)
                return 2
            version, label = args.model_version, args.version_label
            for start, chunk in _chunks(client, texts):
                try:
                    if args.command == "translate":
                        results = client.translate(
                            chunk,
                            beam_size=args.beam_size,
                            n_best=args.n_best,
                            max_length=args.max_length,
                            model_version=version,
                            model_version_label=label,
                            return_alignment=args.alignment,
                        )
                    else:
                        results = client.classify(
                            chunk, model_version=version, model_version_label=label
                        )
                except ServingError as err:
                    # the server numbers the texts of its request: number them in the input
                    details = re.sub(
                        r"texts\[(\d+)\]", lambda m, s=start: f"texts[{s + int(m[1])}]", err.details
                    )
                    raise ServingError(err.code, details) from None
                print("\n".join(_line(r, args) for r in results), flush=True)
                if not args.json:  # what a pipe reading the answers should not get: stderr
                    for j, r in enumerate(results):
                        for w in r.warnings:
                            note = f"warning: texts[{start + j}]: {w.code}: {w.message}"
                            print(note, file=sys.stderr)
                # Later requests name the version that answered the first, so that the whole
                # input is answered by one model even if a new version loads meanwhile.
                if results:
                    version, label = results[0].model_version, None
    except ServingError as err:
        print(f"error: {err.code.name}: {err.details}", file=sys.stderr)
        if err.code.name == "UNAVAILABLE" and "failed to connect" in err.details:
            print(
                f"is a server running at {args.target}? (`make serve` starts one)", file=sys.stderr
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
