"""The error catalog: every error predictd can answer with, in one table. No I/O.

Two levels, as the public pages the product follows define them:

* API-level errors reject a request before a prediction id exists. Nothing is queued or charged.
  They are raised as :class:`ApiError` and rendered by each HTTP surface in its own body shape.
* Runtime errors end an accepted prediction with status ``failed``. Model code raises them by name
  (:class:`ModelError` subclasses); anything else a model raises becomes ``PipelineError``.

Every other module takes names, statuses and retryability from here; no error string is retyped elsewhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class Level(StrEnum):
    API = "api"
    PREDICTION = "prediction"


class ErrorId(StrEnum):
    """Canonical (Skytells surface) identifiers of API-level errors."""

    INVALID_INPUT = "INVALID_INPUT"
    INVALID_PARAMETER = "INVALID_PARAMETER"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    MISSING_REQUIRED_FIELD = "MISSING_REQUIRED_FIELD"
    INVALID_DATE_FORMAT = "INVALID_DATE_FORMAT"
    INVALID_DATE_RANGE = "INVALID_DATE_RANGE"
    INFRASTRUCTURE_ERROR = "INFRASTRUCTURE_ERROR"
    UNAUTHORIZED = "UNAUTHORIZED"
    ACCOUNT_SUSPENDED = "ACCOUNT_SUSPENDED"
    PAYMENT_REQUIRED = "PAYMENT_REQUIRED"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    SECURITY_VIOLATION = "SECURITY_VIOLATION"
    MODEL_ACCESS_DENIED = "MODEL_ACCESS_DENIED"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    PREDICTION_NOT_FOUND = "PREDICTION_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    PREDICTION_NOT_CANCELLABLE = "PREDICTION_NOT_CANCELLABLE"
    UNPROCESSABLE_ENTITY = "UNPROCESSABLE_ENTITY"
    MODERATION_ERROR = "MODERATION_ERROR"
    CONTENT_POLICY_VIOLATION = "CONTENT_POLICY_VIOLATION"
    USE_CASE_NOT_SUPPORTED = "USE_CASE_NOT_SUPPORTED"
    MODEL_NOT_AUTHORIZED = "MODEL_NOT_AUTHORIZED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
    LEGAL_REASONS = "LEGAL_REASONS"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    MODEL_SETUP_FAILED = "MODEL_SETUP_FAILED"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # Refused by the HTTP connection itself, before any route runs (api/connection/protocol.py).
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    URI_TOO_LONG = "URI_TOO_LONG"
    REQUEST_HEADERS_TOO_LARGE = "REQUEST_HEADERS_TOO_LARGE"
    TOO_MANY_CONNECTIONS = "TOO_MANY_CONNECTIONS"


@dataclass(frozen=True, slots=True)
class ApiErrorSpec:
    """How one API-level error appears on each surface."""

    error_id: ErrorId
    http_status: int
    fashn_name: str
    retryable: bool
    meaning: str
    # The Skytells surface may answer a different error_id than the canonical one (the contract allows
    # RATE_LIMIT_EXCEEDED for concurrency so that clients keyed on the documented ids back off).
    native_error_id: ErrorId | None = None

    @property
    def wire_error_id(self) -> ErrorId:
        return self.native_error_id or self.error_id

    @property
    def fashn_status(self) -> int:
        return FASHN_STATUS[self.fashn_name]


# Seed 000 gives each FASHN error name one HTTP status.
FASHN_STATUS: dict[str, int] = {
    "BadRequest": 400,
    "UnauthorizedAccess": 401,
    "NotFound": 404,
    "ContentModerationError": 422,
    "RateLimitExceeded": 429,
    "ConcurrencyLimitExceeded": 429,
    "OutOfCredits": 429,
    "InternalServerError": 500,
    # Not on the seed page: the HTTP connection's own refusals, which keep their HTTP status on both
    # surfaces (clients and proxies act on 408 / 414 / 431 / 503 before they read a body).
    "RequestTimeout": 408,
    "URITooLong": 414,
    "RequestHeaderFieldsTooLarge": 431,
    "ServiceUnavailable": 503,
}


def _api(
    error_id: ErrorId,
    http_status: int,
    fashn_name: str,
    retryable: bool,
    meaning: str,
    native_error_id: ErrorId | None = None,
) -> ApiErrorSpec:
    return ApiErrorSpec(error_id, http_status, fashn_name, retryable, meaning, native_error_id)


_E = ErrorId
API_ERRORS: dict[ErrorId, ApiErrorSpec] = {
    spec.error_id: spec
    for spec in (
        _api(
            _E.INVALID_INPUT,
            400,
            "BadRequest",
            False,
            "One or more input fields failed validation, or the body is not a JSON object.",
        ),
        _api(
            _E.INVALID_PARAMETER, 400, "BadRequest", False, "A query parameter is out of its allowed range."
        ),
        _api(
            _E.UNSUPPORTED_MEDIA_TYPE,
            400,
            "BadRequest",
            False,
            "The Content-Type of a POST body is not application/json.",
        ),
        _api(
            _E.MISSING_REQUIRED_FIELD,
            400,
            "BadRequest",
            False,
            "A required top-level field is absent from the request body.",
        ),
        _api(_E.INVALID_DATE_FORMAT, 400, "BadRequest", False, "A date parameter is not ISO 8601."),
        _api(_E.INVALID_DATE_RANGE, 400, "BadRequest", False, "The start of a date range is after its end."),
        _api(
            _E.INFRASTRUCTURE_ERROR,
            400,
            "BadRequest",
            False,
            "A pre-queue infrastructure check rejected the request (e.g. a size limit).",
        ),
        _api(
            _E.UNAUTHORIZED, 401, "UnauthorizedAccess", False, "The API key is missing, unknown or revoked."
        ),
        _api(_E.ACCOUNT_SUSPENDED, 401, "UnauthorizedAccess", False, "The key's account is suspended."),
        _api(_E.PAYMENT_REQUIRED, 402, "OutOfCredits", False, "The account balance is negative."),
        _api(
            _E.INSUFFICIENT_CREDITS, 402, "OutOfCredits", False, "Not enough credits to run this prediction."
        ),
        _api(_E.SECURITY_VIOLATION, 403, "BadRequest", False, "The request was flagged as malicious."),
        _api(
            _E.MODEL_ACCESS_DENIED,
            403,
            "BadRequest",
            False,
            "The account's plan does not include this model.",
        ),
        _api(_E.MODEL_NOT_FOUND, 404, "NotFound", False, "No model exists with the given slug."),
        _api(
            _E.PREDICTION_NOT_FOUND,
            404,
            "NotFound",
            False,
            "No prediction exists with the given id for this account.",
        ),
        _api(_E.NOT_FOUND, 404, "NotFound", False, "No such route."),
        _api(
            _E.PREDICTION_NOT_CANCELLABLE,
            409,
            "BadRequest",
            False,
            "The prediction already reached a terminal state.",
        ),
        _api(
            _E.UNPROCESSABLE_ENTITY,
            422,
            "BadRequest",
            False,
            "The request is well-formed but semantically impossible.",
        ),
        _api(
            _E.MODERATION_ERROR,
            422,
            "ContentModerationError",
            True,
            "The moderation service could not judge the input.",
        ),
        _api(
            _E.CONTENT_POLICY_VIOLATION,
            422,
            "ContentModerationError",
            False,
            "The input violates the content policy.",
        ),
        _api(
            _E.USE_CASE_NOT_SUPPORTED,
            422,
            "BadRequest",
            False,
            "The model does not support the requested use case.",
        ),
        _api(_E.MODEL_NOT_AUTHORIZED, 422, "BadRequest", False, "The model is disabled for this account."),
        _api(
            _E.RATE_LIMIT_EXCEEDED, 429, "RateLimitExceeded", True, "Too many requests in the current window."
        ),
        _api(
            _E.CONCURRENCY_LIMIT_EXCEEDED,
            429,
            "ConcurrencyLimitExceeded",
            True,
            "Too many predictions in flight for this account.",
            native_error_id=_E.RATE_LIMIT_EXCEEDED,
        ),
        _api(_E.LEGAL_REASONS, 451, "BadRequest", False, "The request is refused for legal reasons."),
        _api(_E.INTERNAL_ERROR, 500, "InternalServerError", True, "An unexpected server error occurred."),
        _api(
            _E.MODEL_UNAVAILABLE, 503, "InternalServerError", True, "No worker can serve the model right now."
        ),
        # A model whose own setup raised on every worker that tried: retrying cannot help until an operator
        # fixes it. Clients know it by the contract's id, at the contract's status for it (500), on both
        # surfaces, and are told not to retry.
        _api(
            _E.MODEL_SETUP_FAILED,
            500,
            "InternalServerError",
            False,
            "The model failed to start; an operator must fix it before it can run.",
            native_error_id=_E.MODEL_UNAVAILABLE,
        ),
        # Contention, not a fault: the database is busy with other writers (a lock held past its timeout,
        # a serialization failure, no connection free). Trying again shortly succeeds.
        _api(
            _E.SERVICE_UNAVAILABLE,
            503,
            "ServiceUnavailable",
            True,
            "The database is busy with other writes; retry after Retry-After.",
        ),
        _api(
            _E.REQUEST_TIMEOUT,
            408,
            "RequestTimeout",
            True,
            "The request's headers or body did not arrive in time.",
        ),
        _api(
            _E.URI_TOO_LONG,
            414,
            "URITooLong",
            False,
            "The request line (method, path and query) is longer than this deployment accepts.",
        ),
        _api(
            _E.REQUEST_HEADERS_TOO_LARGE,
            431,
            "RequestHeaderFieldsTooLarge",
            False,
            "A request header, the number of headers or their total size exceeds this deployment's limits.",
        ),
        _api(
            _E.TOO_MANY_CONNECTIONS,
            503,
            "ServiceUnavailable",
            True,
            "Too many connections are open from this client, or to this server.",
        ),
    )
}

# The errors the HTTP connection answers by itself (no route ran): not in the public contract's table,
# which lists what routes answer.
CONNECTION_ERRORS = frozenset(
    {_E.REQUEST_TIMEOUT, _E.URI_TOO_LONG, _E.REQUEST_HEADERS_TOO_LARGE, _E.TOO_MANY_CONNECTIONS}
)


# Messages quote what the caller sent (a slug, a use case, a value that failed its schema). Each is clipped
# in the middle, keeping the start and the reason at the end, so that a 10 MB string comes back as ~1 KB,
# not twice over in the body.
MAX_MESSAGE_CHARS = 1000


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head - 5
    return f"{text[:head]} ... {text[-tail:]}" if tail > 0 else text[:limit]


# An absolute path on this machine: slashes, then a last part. What is left of it for a client is that part.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])(?:/[^/\s'\"()<>:,;]+)+/([^/\s'\"()<>:,;]+)")


def without_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part: what a client may read of a server-side
    failure (a model's import or setup error), while the server's log keeps the whole of it."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


class ApiError(Exception):
    """An API-level rejection. Raised anywhere below the HTTP layer; rendered per surface by api/."""

    def __init__(
        self,
        error_id: ErrorId,
        message: str | None = None,
        *,
        details: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.spec = API_ERRORS[error_id]
        self.message = clip(message or self.spec.meaning)
        self.details = clip(details) if details is not None else None
        self.retry_after = retry_after
        self.headers = headers or {}
        super().__init__(f"{error_id}: {self.message}")

    @property
    def error_id(self) -> ErrorId:
        return self.spec.error_id


# ---------------------------------------------------------------------------------------------------------
# Runtime (prediction-level) errors


@dataclass(frozen=True, slots=True)
class RuntimeErrorSpec:
    """How a named runtime failure appears in a failed prediction on each surface."""

    name: str  # the FASHN name, also the exception class name models raise
    error_id: ErrorId  # what the Skytells surface reports as error_id
    retryable: bool
    meaning: str


def _rt(name: str, error_id: ErrorId, retryable: bool, meaning: str) -> RuntimeErrorSpec:
    return RuntimeErrorSpec(name, error_id, retryable, meaning)


RUNTIME_ERRORS: dict[str, RuntimeErrorSpec] = {
    spec.name: spec
    for spec in (
        _rt(
            "ImageLoadError",
            _E.UNPROCESSABLE_ENTITY,
            False,
            "An input image or asset could not be fetched or decoded.",
        ),
        _rt(
            "ContentModerationError",
            _E.CONTENT_POLICY_VIOLATION,
            False,
            "An input or output violated the content policy.",
        ),
        _rt(
            "InputValidationError", _E.UNPROCESSABLE_ENTITY, False, "Parameters were invalid or inconsistent."
        ),
        _rt(
            "ThirdPartyError", _E.INTERNAL_ERROR, True, "An upstream provider refused or failed the request."
        ),
        _rt(
            "UnavailableError",
            _E.MODEL_UNAVAILABLE,
            True,
            "A service needed to fulfil the request was overloaded or unavailable.",
        ),
        _rt("PipelineError", _E.INTERNAL_ERROR, True, "An unexpected failure occurred inside the pipeline."),
        _rt("PoseError", _E.UNPROCESSABLE_ENTITY, False, "No body pose was found in the input image."),
        _rt("DeadlineExceeded", _E.INTERNAL_ERROR, True, "The prediction exceeded its deadline."),
    )
}

PIPELINE_ERROR = RUNTIME_ERRORS["PipelineError"]
UNAVAILABLE_ERROR = RUNTIME_ERRORS["UnavailableError"]
DEADLINE_EXCEEDED = RUNTIME_ERRORS["DeadlineExceeded"]


def runtime_spec(name: str) -> RuntimeErrorSpec:
    """The spec for a runtime error name; a model-specific name unknown here counts as a pipeline failure
    for the Skytells error_id but keeps its own name."""
    spec = RUNTIME_ERRORS.get(name)
    if spec is not None:
        return spec
    return RuntimeErrorSpec(name, PIPELINE_ERROR.error_id, PIPELINE_ERROR.retryable, PIPELINE_ERROR.meaning)


class ModelError(Exception):
    """Base of the exceptions models raise to fail a prediction by name.

    A model-specific error subclasses this and sets ``name`` (and, when not in the catalog, ``error_id``).
    """

    name: ClassVar[str] = "PipelineError"
    error_id: ClassVar[ErrorId | None] = None

    @classmethod
    def spec(cls) -> RuntimeErrorSpec:
        base = runtime_spec(cls.name)
        if cls.error_id is not None and cls.error_id != base.error_id:
            return RuntimeErrorSpec(cls.name, cls.error_id, base.retryable, base.meaning)
        return base


class ImageLoadError(ModelError):
    name = "ImageLoadError"


class ContentModerationError(ModelError):
    name = "ContentModerationError"


class InputValidationError(ModelError):
    name = "InputValidationError"


class ThirdPartyError(ModelError):
    name = "ThirdPartyError"


class UnavailableError(ModelError):
    name = "UnavailableError"


class PipelineError(ModelError):
    name = "PipelineError"


class PoseError(ModelError):
    name = "PoseError"
