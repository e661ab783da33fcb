"""Turning bodies and query parameters into values, or into the documented error naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from predictd.api import parsing
from predictd.errors import ApiError, ErrorId


def _error(fn: object, *args: object, **kwargs: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn(*args, **kwargs)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    parsing.require_json_content_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_other_content_types_are_refused(content_type: str | None) -> None:
    error = _error(parsing.require_json_content_type, content_type)
    assert error.error_id is ErrorId.UNSUPPORTED_MEDIA_TYPE
    assert "application/json" in error.message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bodies_that_are_not_json_objects(raw: bytes, fragment: str) -> None:
    error = _error(parsing.parse_json_object, raw)
    assert error.error_id is ErrorId.INVALID_INPUT
    assert fragment in error.message


def test_missing_fields_are_named() -> None:
    error = _error(parsing.require_fields, {"input": {}}, "model", "input")
    assert error.error_id is ErrorId.MISSING_REQUIRED_FIELD
    assert "'model'" in error.message
    assert "'input'" not in error.message


def test_unknown_fields_are_named() -> None:
    error = _error(parsing.reject_unknown_fields, {"model": "x", "inptu": {}}, frozenset({"model", "input"}))
    assert error.error_id is ErrorId.INVALID_INPUT
    assert "'inptu'" in error.message


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "1.5", "51", ""])
def test_per_page_out_of_range(raw: str) -> None:
    error = _error(parsing.positive_int, "per_page", raw, 20, 50)
    assert error.error_id is ErrorId.INVALID_PARAMETER
    assert "per_page" in error.message
    assert "between 1 and 50" in error.message


def test_page_defaults_and_accepts_large_values() -> None:
    assert parsing.positive_int("page", None, 1) == 1
    assert parsing.positive_int("page", "900", 1) == 900


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22", datetime(2026, 11, 22, tzinfo=UTC)),
        ("2026-11-22T10:00:00Z", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T12:00:00+02:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
        ("2026-11-22T12:00:00 02:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),  # '+' lost in a query string
        ("2026-11-22T10:00:00", datetime(2026, 11, 22, 10, tzinfo=UTC)),
    ],
)
def test_iso_dates(raw: str, expected: datetime) -> None:
    assert parsing.iso_datetime("from", raw) == expected


def test_a_bare_end_date_covers_the_whole_day() -> None:
    end = parsing.iso_datetime("to", "2026-11-22", end_of_day=True)
    assert end == datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["yesterday", "22/11/2026", "2026-13-01", "2026-11-22T25:00"])
def test_bad_dates_name_the_parameter(raw: str) -> None:
    error = _error(parsing.iso_datetime, "until", raw)
    assert error.error_id is ErrorId.INVALID_DATE_FORMAT
    assert "'until'" in error.message


def test_reversed_range() -> None:
    start = datetime(2026, 11, 22, tzinfo=UTC)
    end = datetime(2026, 11, 1, tzinfo=UTC)
    error = _error(parsing.date_range, "from", start, "to", end)
    assert error.error_id is ErrorId.INVALID_DATE_RANGE
    assert parsing.date_range("from", end, "to", start) == (end, start)


def test_fields_choice() -> None:
    allowed = frozenset({"input_schema", "output_schema"})
    assert parsing.csv_choice("fields", "input_schema, output_schema", allowed) == allowed
    error = _error(parsing.csv_choice, "fields", "input_schema,pricing", allowed)
    assert error.error_id is ErrorId.INVALID_PARAMETER
    assert "pricing" in error.message
