"""The client side: a Python library and the `seq2seq-client` command (grpcio + protobuf only).

Example:
    >>> from serving.client import Client
    >>> with Client("localhost:50051") as client:
    ...     print(client.translate(["Me gusta leer."])[0].text)
"""

from serving.client.client import (
    ClassificationResult,
    Client,
    Hypothesis,
    ServingError,
    TranslationResult,
)

__all__ = ["ClassificationResult", "Client", "Hypothesis", "ServingError", "TranslationResult"]
