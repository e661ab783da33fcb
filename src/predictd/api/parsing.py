"""Reading request bodies and query parameters into values, or into the catalog's errors. No I/O."""

from __future__ import annotations

import re
import urllib.parse
from datetime import UTC, datetime, time, timedelta
from typing import Any

import orjson

from ..core.nul import NUL, nul_path
from ..errors import ApiError, ErrorId

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# A '+hh:mm' offset sent unencoded in a query string arrives as ' hh:mm'.
_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")
# The deepest nesting orjson encodes (its recursion limit); see parse_json_object.
MAX_JSON_DEPTH = 254
# The largest integer a query parameter may carry (see positive_int).
MAX_QUERY_INT = 2**31 - 1
# The dates a query parameter may name (see iso_datetime).
EARLIEST_DATE = datetime(1, 1, 2, tzinfo=UTC)
LATEST_DATE = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


def require_json_content_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        shown = content_type or "none"
        raise ApiError(
            ErrorId.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json (got {shown}).",
        )


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ApiError(ErrorId.INVALID_INPUT, "The request body is empty; send a JSON object.")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(ErrorId.INVALID_INPUT, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(ErrorId.INVALID_INPUT, "The request body must be a JSON object.")
    try:
        # Inputs are stored, fingerprinted and sent to workers as JSON by orjson, which encodes at most
        # MAX_JSON_DEPTH levels; deeper values (the parser takes 1024) would fail there, and in the repr of a
        # validation message, with a 500. Re-encoding is C-fast and refuses them here instead.
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise ApiError(
            ErrorId.INVALID_INPUT,
            f"The request body is nested too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects.",
        ) from None
    # JSON can only carry a NUL escaped: when the bytes hold no escape, no value holds one (a C-fast look).
    where = nul_path(value) if b"\\u0000" in raw else None
    if where is not None:
        raise ApiError(ErrorId.INVALID_INPUT, f"Field {where!r} contains {NUL_REFUSED}.")
    return value


# PostgreSQL stores no NUL in text or jsonb; SQLite would. Refused in everything a request carries, on both
# backends alike, so that a deployment answers the same whichever database it runs on.
NUL_REFUSED = "a NUL character (\\u0000, %00), which predictd accepts in no value"


def nul_in_target(path: str, query: bytes) -> ApiError | None:
    """The refusal of a request whose path or query string carries a NUL character (``%00``), naming the
    path segment or query parameter; None for every other request (two substring looks)."""
    if NUL in path:
        segment = next(part for part in path.split("/") if NUL in part)
        return ApiError(ErrorId.INVALID_PARAMETER, f"Path segment {segment!r} contains {NUL_REFUSED}.")
    if b"%00" in query:
        pairs = urllib.parse.parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        name = next((n for n, v in pairs if NUL in n or NUL in v), "")
        return ApiError(ErrorId.INVALID_PARAMETER, f"Query parameter {name!r} contains {NUL_REFUSED}.")
    return None


def require_fields(body: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if name not in body or body[name] is None]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        raise ApiError(ErrorId.MISSING_REQUIRED_FIELD, f"Missing required field(s): {listed}.")


def reject_unknown_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(
            ErrorId.INVALID_INPUT,
            f"Unknown field(s) {', '.join(repr(u) for u in unknown)}; allowed: {', '.join(sorted(allowed))}.",
        )


def expect_type(body: dict[str, Any], name: str, kind: type | tuple[type, ...], described: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise ApiError(ErrorId.INVALID_INPUT, f"Field {name!r} must be {described}.")
    return value


def positive_int(name: str, raw: str | None, default: int, maximum: int | None = None) -> int:
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    # Without a bound of its own, a value must still fit the database: page numbers become OFFSETs and
    # ids are compared with 32-bit INTEGER columns (SQLite and asyncpg raise on larger ints: a 500).
    if value < 1 or value > (maximum if maximum is not None else MAX_QUERY_INT):
        bound = (
            f"between 1 and {maximum}" if maximum is not None else f"a positive integer up to {MAX_QUERY_INT}"
        )
        raise ApiError(ErrorId.INVALID_PARAMETER, f"Query parameter {name!r} must be {bound} (got {raw!r}).")
    return value


def iso_datetime(name: str, raw: str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO 8601 date or date-time. A bare date as the end of a range covers that whole day."""
    if raw is None or raw == "":
        return None
    text = _SPACE_OFFSET.sub(r"+\1", raw.strip())
    try:
        if _DATE_ONLY.match(text):
            day = datetime.fromisoformat(text).date()
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            value = moment + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else moment
        else:
            value = datetime.fromisoformat(text)
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except ValueError:
        raise ApiError(
            ErrorId.INVALID_DATE_FORMAT,
            f"Query parameter {name!r} must be an ISO 8601 date or date-time "
            f"(e.g. 2026-11-22 or 2026-11-22T10:00:00Z), got {raw!r}.",
        ) from None
    except OverflowError:  # a whole day, or an offset, past the ends of the calendar
        raise _date_out_of_range(name, raw) from None
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise _date_out_of_range(name, raw)
    return value


def _date_out_of_range(name: str, raw: str) -> ApiError:
    # A day inside the calendar's ends, so that no day arithmetic (a whole day, a time zone) on the way to
    # either database can step past them (Python raises OverflowError there: a 500).
    return ApiError(
        ErrorId.INVALID_PARAMETER,
        f"Query parameter {name!r} must be between {EARLIEST_DATE.date()} and {LATEST_DATE.date()} (UTC), "
        f"got {raw!r}.",
    )


def date_range(
    start_name: str, start: datetime | None, end_name: str, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    if start is not None and end is not None and start > end:
        raise ApiError(
            ErrorId.INVALID_DATE_RANGE,
            f"Query parameter {start_name!r} ({start.isoformat()}) "
            f"is after {end_name!r} ({end.isoformat()}).",
        )
    return start, end


def csv_choice(name: str, raw: str | None, allowed: frozenset[str]) -> frozenset[str]:
    if not raw:
        return frozenset()
    chosen = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(chosen - allowed)
    if unknown:
        raise ApiError(
            ErrorId.INVALID_PARAMETER,
            f"Query parameter {name!r} has unknown value(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}.",
        )
    return chosen
