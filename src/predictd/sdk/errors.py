"""The SDK's exceptions, one class per catalog error, generated from :mod:`predictd.errors`.

Hierarchy::

    PredictdError
    ├── APIError                       an HTTP error answer (either surface's body shape)
    │   ├── BadRequestError            400  ── InvalidInputError, InvalidParameterError, ...
    │   ├── AuthenticationError        401  ── UnauthorizedError, AccountSuspendedError
    │   ├── PermissionDeniedError      403  ── SecurityViolationError, ModelAccessDeniedError
    │   ├── NotFoundError              404  ── ModelNotFoundError, PredictionNotFoundError
    │   ├── ConflictError              409  ── PredictionNotCancellableError
    │   ├── UnprocessableEntityError   422  ── ModerationError, ContentPolicyViolationError, ...
    │   ├── RateLimitError             429  ── RateLimitExceededError, ConcurrencyLimitExceededError
    │   ├── InternalServerError        5xx  ── InternalError, ModelUnavailableError
    │   └── PaymentRequiredError, InsufficientCreditsError, LegalReasonsError (402 / 451)
    ├── APIConnectionError             no answer (refused, reset, timed out: APITimeoutError)
    ├── PredictionFailed               the prediction ended with status "failed"
    ├── PredictionCancelled            the prediction was cancelled while being waited for
    ├── PredictionTimeout              waiting for the prediction took longer than asked
    └── WebhookVerificationError       a webhook delivery did not verify

The catalog classes are built from ``API_ERRORS`` when this module is imported: a catalog entry added on
the server side gets its class here without any edit. A catalog id whose class name equals its status
family's (``NOT_FOUND``, ``UNPROCESSABLE_ENTITY``) is answered by the family class itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson

from ..errors import API_ERRORS, ApiErrorSpec, ErrorId

__all__ = [
    "ERROR_CLASSES",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PredictdError",
    "PredictionCancelled",
    "PredictionFailed",
    "PredictionTimeout",
    "RateLimitError",
    "UnprocessableEntityError",
    "WebhookVerificationError",
    "class_name",
    "error_from_response",
]


class PredictdError(Exception):
    """Base of every exception the SDK raises."""


class APIError(PredictdError):
    """The server answered with an error status.

    ``error_id`` is the catalog id (``MODEL_NOT_FOUND``); against the FASHN surface, whose bodies carry only
    a name, it is the catalog id when the name maps to exactly one, else the FASHN name (``NotFound``).
    """

    #: The catalog id this class stands for (None for the status families and APIError itself).
    catalog_id: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_id: str,
        request_id: str | None = None,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
        details: str | None = None,
        fashn_name: str | None = None,
        body: Any = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_id = error_id
        self.request_id = request_id
        self.retryable = retryable
        self.headers: dict[str, str] = dict(headers or {})
        self.details = details
        self.fashn_name = fashn_name
        self.body = body
        super().__init__(f"{error_id}: {message}" if message else error_id)

    @property
    def status_code(self) -> int:
        return self.status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, error_id={self.error_id!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """HTTP 400."""


class AuthenticationError(APIError):
    """HTTP 401."""


class PermissionDeniedError(APIError):
    """HTTP 403."""


class NotFoundError(APIError):
    """HTTP 404."""


class ConflictError(APIError):
    """HTTP 409."""


class UnprocessableEntityError(APIError):
    """HTTP 422."""


class RateLimitError(APIError):
    """HTTP 429."""


class InternalServerError(APIError):
    """HTTP 5xx."""


_FAMILIES: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def family_for(status: int) -> type[APIError]:
    """The status-family class of an HTTP status (APIError when the status has no family)."""
    if status >= 500:
        return InternalServerError
    return _FAMILIES.get(status, APIError)


def class_name(error_id: str) -> str:
    """``MODEL_NOT_FOUND`` -> ``ModelNotFoundError``; ``INTERNAL_ERROR`` -> ``InternalError``."""
    camel = "".join(part.capitalize() for part in error_id.split("_"))
    return camel if camel.endswith("Error") else f"{camel}Error"


def _generate(spec: ApiErrorSpec) -> type[APIError]:
    family = family_for(spec.http_status)
    name = class_name(spec.error_id.value)
    if name == family.__name__:
        return family
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{spec.error_id.value} (HTTP {spec.http_status}): {spec.meaning}",
        "catalog_id": spec.error_id.value,
    }
    return type(name, (family,), namespace)


#: catalog id -> exception class, for every API-level error of the catalog.
ERROR_CLASSES: dict[str, type[APIError]] = {
    error_id.value: _generate(spec) for error_id, spec in API_ERRORS.items()
}
_GENERATED: dict[str, type[APIError]] = {
    cls.__name__: cls for cls in ERROR_CLASSES.values() if cls.__module__ == __name__ and cls.catalog_id
}
globals().update(_GENERATED)
__all__ += sorted(_GENERATED)

# FASHN bodies name the error coarsely ("NotFound"); a name shared by several catalog ids stays a family.
_BY_FASHN_NAME: dict[str, list[ApiErrorSpec]] = {}
for _spec in API_ERRORS.values():
    _BY_FASHN_NAME.setdefault(_spec.fashn_name, []).append(_spec)

if TYPE_CHECKING:  # the generated classes, for type checkers

    def __getattr__(name: str) -> type[APIError]: ...


class APIConnectionError(PredictdError):
    """No HTTP answer: the connection was refused, reset, or the request timed out (after retries)."""


class APITimeoutError(APIConnectionError):
    """The request timed out (after retries)."""


class PredictionFailed(PredictdError):
    """A prediction ended with status ``failed``: ``error_name`` is its runtime error name (``PoseError``)."""

    def __init__(self, prediction: Mapping[str, Any]) -> None:
        self.prediction: dict[str, Any] = dict(prediction)
        self.id: str | None = self.prediction.get("id")
        self.error_name: str | None = self.prediction.get("error_name")
        self.error_id: str | None = self.prediction.get("error_id")
        self.message: str = str(self.prediction.get("error") or "the prediction failed")
        self.retryable: bool = bool(self.prediction.get("retryable"))
        super().__init__(f"{self.error_name or self.error_id or 'failed'}: {self.message}")


class PredictionCancelled(PredictdError):
    """The prediction was cancelled before it ended."""

    def __init__(self, prediction: Mapping[str, Any]) -> None:
        self.prediction: dict[str, Any] = dict(prediction)
        self.id: str | None = self.prediction.get("id")
        super().__init__(f"prediction {self.id} was cancelled")


class PredictionTimeout(PredictdError, TimeoutError):
    """The prediction had not ended when the wait's timeout passed; it may still end later."""

    def __init__(self, prediction: Mapping[str, Any], timeout: float) -> None:
        self.prediction: dict[str, Any] = dict(prediction)
        self.id: str | None = self.prediction.get("id")
        super().__init__(
            f"prediction {self.id} is still {self.prediction.get('status')} after {timeout:g} s of waiting"
        )


class WebhookVerificationError(PredictdError):
    """A webhook delivery's signature, timestamp or payload did not verify: do not trust it."""


# -- parsing error answers ---------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _json(content: bytes) -> Any:
    try:
        return orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return None


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer, from a native body (flat ``error_id`` / ``message`` and nested
    ``error`` object), a FASHN body (``{"error": Name, "message": ...}``) or any other body."""
    status = response.status_code
    headers = response.headers
    body = _json(response.content)
    fields: dict[str, Any] = body if isinstance(body, dict) else {}
    nested = fields.get("error")
    nested_fields: dict[str, Any] = nested if isinstance(nested, dict) else {}
    fashn_name = _str(nested)  # FASHN: "error" is the name
    error_id = _str(fields.get("error_id")) or _str(nested_fields.get("error_id"))
    message = (
        _str(fields.get("message"))
        or _str(nested_fields.get("message"))
        or _str(fields.get("detail"))
        or (response.text.strip()[:500] if body is None else None)
        or response.reason_phrase
        or f"HTTP {status}"
    )
    details = _str(nested_fields.get("details"))

    cls: type[APIError]
    spec: ApiErrorSpec | None = None
    if error_id is not None and error_id in ERROR_CLASSES:
        cls = ERROR_CLASSES[error_id]
        spec = API_ERRORS[ErrorId(error_id)]
    elif fashn_name is not None:
        candidates = _BY_FASHN_NAME.get(fashn_name, [])
        if len(candidates) == 1:
            spec = candidates[0]
            error_id = spec.error_id.value
            cls = ERROR_CLASSES[error_id]
        else:
            error_id = fashn_name
            cls = family_for(status)
    else:
        cls = family_for(status)
    if error_id is None:
        error_id = f"HTTP_{status}"
    if fashn_name is None and spec is not None:
        fashn_name = spec.fashn_name

    retryable_field = fields.get("retryable", nested_fields.get("retryable"))
    should_retry = headers.get("x-should-retry")
    if isinstance(retryable_field, bool):
        retryable = retryable_field
    elif should_retry in ("true", "false"):
        retryable = should_retry == "true"
    elif spec is not None:
        retryable = spec.retryable
    else:
        retryable = status in (408, 429) or status >= 500

    return cls(
        message,
        status=status,
        error_id=error_id,
        request_id=_str(fields.get("request_id")) or headers.get("x-request-id"),
        retryable=retryable,
        headers=dict(headers.items()),
        details=details,
        fashn_name=fashn_name,
        body=body,
    )
