"""The client side: a Python library and the `seq2seq-client` command (grpcio + protobuf only).

Example:
    >>> from serving.client import Client
    >>> with Client("localhost:50051") as client:
    ...     print(client.translate(["Me gusta leer."])[0].text)
"""

from serving.client.client import (
    AnswerWarning,
    ClassificationResult,
    Client,
    Hypothesis,
    Language,
    Sentence,
    ServingError,
    TranslationResult,
)

__all__ = [
    "AnswerWarning",
    "ClassificationResult",
    "Client",
    "Hypothesis",
    "Language",
    "Sentence",
    "ServingError",
    "TranslationResult",
]
