"""A fake predictor for the servicer and HTTP API tests: the predictor's interface, canned
answers, the calls it got, and an error to raise or an event to wait on."""

import threading
from typing import NamedTuple

from seq2seq.answers import AnswerWarning, ClassificationAnswer, TranslationAnswer
from seq2seq.language import LanguageGuess
from serving.server.errors import Limits


class Hyp(NamedTuple):  # the fields of seq2seq.inference.Hypothesis the servicer reads
    text: str
    score: float
    source_tokens: tuple = ()
    target_tokens: tuple = ()
    alignment: tuple = ()
    word_alignment: tuple = ()


def _checked(text: str):
    """Canned warnings and language check: a text starting "The " is English."""
    if text.startswith("The "):
        note = AnswerWarning("not_source_language", "this does not look like Spanish")
        return (note,), LanguageGuess("en", 0.9, "es", 0.001)
    return (), LanguageGuess("es", 0.75, "es", 0.75)


class Version(NamedTuple):  # what the HTTP API's /readyz reads of a loaded model
    version: int


class FakePredictor:
    limits = Limits()

    def __init__(self, error=None, hold: threading.Event | None = None):
        self.error = error
        self.hold = hold  # set: calls wait for it (to keep them running)
        self.calls = []
        self.models = {"translate": Version(7), "classify": Version(3)}

    def translate(self, texts, **options):
        self.calls.append(("translate", texts, options))
        if self.hold is not None:
            self.hold.wait(30)
        if self.error:
            raise self.error
        if options.get("return_alignment"):
            rows = ((0.75, 0.25), (0.5, 0.5))
            aligned = Hyp("A", -0.5, ("▁a", "b"), ("▁A", "<eos>"), rows, (("A", "ab"),))
            return [TranslationAnswer([aligned], 0.8, *_checked(t)) for t in texts], 7
        return [
            TranslationAnswer(
                [Hyp(t.upper(), -0.5), Hyp(t.lower(), -1.5)][: options["n_best"] or 1],
                0.25,
                *_checked(t),
            )
            for t in texts
        ], 7

    def classify(
        self, texts, model_version=None, timeout=None, model_version_label=None, alive=None
    ):
        self.calls.append(("classify", texts, {"model_version": model_version, "timeout": timeout}))
        if self.error:
            raise self.error
        return [ClassificationAnswer("pos", {"neg": 0.25, "pos": 0.75}, (), None) for _ in texts], 3

    def metadata(self, task=None):
        return [
            {
                "task": "classify",
                "version": 3,
                "source_language": "",
                "target_language": "",
                "labels": ["neg", "pos"],
                "source_vocab_size": 100,
                "target_vocab_size": 0,
                "eval_scores": {"accuracy": 0.9},
                "dataset": "toy",
                "default_beam_size": 0,
                "default_max_length": 0,
                "default_length_penalty": 0.0,
                "trained_steps": 250,
                "intermediate": True,
            }
        ]

    def training(self, task=None, full=False):
        """The classifier's run, still training (serving.server.learning's summary)."""
        summary = {
            "state": "training",
            "improving": True,
            "step": 300,
            "total_steps": 1500,
            "steps_per_second": 12.5,
            "score_name": "accuracy",
            "latest_validation": {"step": 250, "loss": 0.5, "score": 75.0},
            "versions": [
                {"version": 3, "step": 250, "valid_loss": 0.5, "valid_score": 75.0, "final": False}
            ],
            "next_check_step": 375,
            "next_check_seconds": 6.0,
            "message": "",
            "updated": 1.0,
        }
        if full:
            summary |= {"train_loss": [[25, 0.7], [50, 0.69]], "validations": [], "grad_norms": {}}
        return {"classify": summary} if task in (None, "classify") else {}
