"""Command line: `python -m seq2seq {data,train,evaluate,export,translate,classify} …`."""

from __future__ import annotations

import argparse
import json
import os
import sys

from seq2seq.config import ConfigError, load_config


def _common(p: argparse.ArgumentParser, task_choice: bool = True) -> None:
    if task_choice:
        p.add_argument("--task", choices=["translate", "classify"], default="translate")
    p.add_argument("--preset", default="default", help="preset name (default, tiny, …)")
    p.add_argument("--config", default=None, help="YAML file merged over the preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting (repeatable)",
    )
    p.add_argument("--data-file", default=None, help="local data file instead of the corpus")
    p.add_argument("--exclude", default=None, help="file of sentences to keep out of the data")
    p.add_argument("--dataset", default=None, help="classification: sentiment | sms_spam")


def _config(args, task: str | None = None):
    overrides = list(args.overrides)
    if getattr(args, "data_file", None):
        overrides.append(f"data.data_file={args.data_file}")
    if getattr(args, "exclude", None):
        overrides.append(f"data.exclude_file={args.exclude}")
    if getattr(args, "dataset", None):
        overrides.append(f"data.dataset={args.dataset}")
    if getattr(args, "eval_file", None):
        overrides.append(f"eval.eval_file={args.eval_file}")
    return load_config(task or args.task, args.preset, args.config, overrides)


def _task_module(task: str):
    if task == "translate":
        from seq2seq.tasks import translation as module
    else:
        from seq2seq.tasks import classification as module
    return module


def _runner(args, cfg):
    """The texts' runner: the exported version `--model`, else the run's trained model."""
    if args.model:
        from seq2seq.inference import ExportedModel

        return ExportedModel(args.model, cfg.task).runner
    return _task_module(cfg.task).load_trained(cfg)


def _read_texts(texts: list[str]) -> list[str]:
    """The texts given as arguments, else the non-blank lines of standard input; as the server
    does, a blank text or a control character is an error rather than a guess."""
    from seq2seq.export_format import check_text

    if not texts:
        for number, raw in enumerate(sys.stdin.buffer, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise ValueError(f"standard input line {number} is not valid UTF-8") from None
            if line.strip():
                texts.append(check_text(line, f"standard input line {number}"))
        if not texts:
            raise ValueError("no texts given: pass them as arguments, or one per line on stdin")
        return texts
    return [check_text(text, f"text {i + 1}") for i, text in enumerate(texts)]


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="an exported version folder instead of the run")
    p.add_argument("--json", action="store_true", help="one JSON object per text, full scores")


def _stop_on_signals():
    """SIGTERM or SIGINT (Ctrl-C) while training: the step under way finishes, a checkpoint is
    written at it and the run returns (it resumes from there); a second signal exits at once.
    Returns the check the training loop polls."""
    import signal

    def stop() -> bool:
        return stop.signum is not None

    stop.signum = None

    def on_signal(signum, _frame):
        if stop.signum is not None:
            os.write(2, f"signal {signum} again: exiting without a checkpoint\n".encode())
            os._exit(128 + signum)
        stop.signum = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seq2seq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="fetch and prepare a corpus into data/prepared/")
    _common(p)
    p = sub.add_parser("train", help="train (resumes from the run's last checkpoint)")
    _common(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--publish",
        metavar="REPOSITORY",
        default=None,
        help="live training: export versions into this model repository as the run improves, "
        "its progress beside them (training.json), and at the end evaluate and export the final "
        "version (what make serve runs)",
    )
    p.add_argument(
        "--until-first-version",
        action="store_true",
        help="with --publish: stop (resumable) once the run has exported a first version",
    )
    p = sub.add_parser("evaluate", help="score the best checkpoint on the test split")
    _common(p)
    p.add_argument("--eval-file", default=None, help="TSV to evaluate instead of the test split")
    p = sub.add_parser("export", help="export the best checkpoint as models/<task>/<version>/")
    _common(p)
    p.add_argument("--repository", default=None, help="model repository (default models/<task>)")
    p = sub.add_parser("report", help="runs/<task>/<run>/report.html: pictures of the run")
    _common(p)
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p = sub.add_parser("translate", help="translate texts (arguments, or stdin lines)")
    _common(p, task_choice=False)
    p.add_argument(
        "texts",
        nargs="*",
        help="source texts, Spanish unless the run is eng-spa (default: one per stdin line)",
    )
    p.add_argument(
        "--beam-size",
        type=int,
        default=None,
        help="beam width; 1 is greedy (default: the model's, eval.beam_size when trained)",
    )
    p.add_argument("--n-best", type=int, default=1, help="hypotheses per text, at most the beam")
    p.add_argument("--max-length", type=int, default=None, help="longest output in tokens")
    p.add_argument("--length-penalty", type=float, default=None, help="GNMT alpha, beam only")
    p.add_argument(
        "--alignment",
        action="store_true",
        help="the source word each output word attends to most (with --json: the pieces and "
        "the attention rows too)",
    )
    _model_options(p)
    p = sub.add_parser("classify", help="classify texts (arguments, or stdin lines)")
    _common(p, task_choice=False)
    p.add_argument("texts", nargs="*", help="texts (default: one per stdin line)")
    _model_options(p)
    args = parser.parse_args(argv)

    from seq2seq.data import DataError
    from seq2seq.files import RunInUse
    from seq2seq.training import TrainingDiverged

    try:
        if args.command == "data":
            from seq2seq.data import prepare

            cfg = _config(args)
            manifest = prepare(cfg)
            print(
                f"prepared {cfg.data_dir}: "
                + json.dumps({k: manifest["counts"][k] for k in ("train", "valid", "test")})
            )
        elif args.command == "train":
            cfg = _config(args)
            if args.until_first_version and not args.publish:
                raise ValueError("--until-first-version needs --publish <repository>")
            stop = _stop_on_signals()
            summary = _task_module(cfg.task).run_training(
                cfg,
                progress=not args.no_progress,
                publish=args.publish,
                until_first_version=args.until_first_version,
                stop=stop,
            )
            # under make serve (--publish) one line: it goes to a console beside the server's
            print(json.dumps(summary, indent=None if args.publish else 2))
            if stop():
                print(f"stopped by a signal at step {summary['steps']}; it resumes from there")
                return 128 + stop.signum
        elif args.command == "evaluate":
            cfg = _config(args)
            _task_module(cfg.task).run_evaluation(cfg)
        elif args.command == "export":
            cfg = _config(args)
            repo = args.repository or f"models/{cfg.task}"
            _task_module(cfg.task).run_export(cfg, repo)
        elif args.command == "report":
            from seq2seq.report import build_report

            cfg = _config(args)
            print(f"wrote {build_report(cfg, progress=not args.no_progress)}")
        elif args.command == "translate":
            cfg = _config(args, "translate")
            texts = _read_texts(args.texts)
            results = _runner(args, cfg).translate(
                texts,
                beam_size=args.beam_size,
                n_best=args.n_best,
                max_length=args.max_length,
                length_penalty=args.length_penalty,
                alignment=args.alignment,
            )
            for text, hyps in zip(texts, results, strict=True):
                if args.json:
                    keep = ("text", "score")
                    rows = [{k: v for k, v in h._asdict().items() if v or k in keep} for h in hyps]
                    print(json.dumps({"source": text, "hypotheses": rows}, ensure_ascii=False))
                elif args.alignment:
                    for h in hyps:
                        words = "  ".join(f"{t}←{s}" for t, s in h.word_alignment)
                        print(f"{h.text} ({h.score:.3f})\n  words: {words}")
                elif args.n_best == 1:
                    print(hyps[0].text)
                else:
                    print(" ||| ".join(f"{h.text} ({h.score:.3f})" for h in hyps))
        elif args.command == "classify":
            cfg = _config(args, "classify")
            texts = _read_texts(args.texts)
            for text, (label, probs) in zip(texts, _runner(args, cfg).classify(texts), strict=True):
                if args.json:
                    out = {"text": text, "label": label, "probabilities": probs}
                    print(json.dumps(out, ensure_ascii=False))
                else:
                    print(f"{label}\t" + " ".join(f"{k}={v:.3f}" for k, v in probs.items()))
    except (ConfigError, DataError, OSError, RunInUse, TrainingDiverged, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
