"""The predictd Python SDK: ``Client`` / ``AsyncClient`` for a predictd server's native HTTP API.

::

    import predictd

    with predictd.Client("pd_...", base_url="http://127.0.0.1:8000") as client:
        prediction = client.run("echo", {"text": "hello"})
        print(prediction["output"])

Predictions and models are plain dicts, as the server answers them. Errors are exceptions from
:mod:`predictd.sdk.errors`, one class per catalog error (``ModelNotFoundError``, ...) under status
families (``NotFoundError``, ...) under ``APIError``; a failed prediction raises ``PredictionFailed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._async_client import AsyncClient, AsyncModels, AsyncPredictions
from ._base import Page, Prediction, ServerSentEvent
from ._client import Client, Models, Predictions
from .errors import (
    ERROR_CLASSES,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PredictdError,
    PredictionCancelled,
    PredictionFailed,
    PredictionTimeout,
    RateLimitError,
    UnprocessableEntityError,
    WebhookVerificationError,
    error_from_response,
)

__all__ = [
    "ERROR_CLASSES",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncClient",
    "AsyncModels",
    "AsyncPredictions",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "InternalServerError",
    "Models",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "PredictdError",
    "Prediction",
    "PredictionCancelled",
    "PredictionFailed",
    "PredictionTimeout",
    "Predictions",
    "RateLimitError",
    "ServerSentEvent",
    "UnprocessableEntityError",
    "WebhookVerificationError",
    "error_from_response",
]
# The catalog's classes (ModelNotFoundError, ...), generated in predictd.sdk.errors.
_CATALOG_CLASSES = {cls.__name__: cls for cls in ERROR_CLASSES.values() if cls.catalog_id is not None}
globals().update(_CATALOG_CLASSES)
__all__ += sorted(_CATALOG_CLASSES)

if TYPE_CHECKING:

    def __getattr__(name: str) -> type[APIError]: ...
