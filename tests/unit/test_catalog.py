"""The error catalog in code matches the contract in docs/errors.md, row by row."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from predictd.errors import (
    API_ERRORS,
    CONNECTION_ERRORS,
    DEADLINE_EXCEEDED,
    FASHN_STATUS,
    RUNTIME_ERRORS,
    ErrorId,
    ModelError,
    PoseError,
)

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def _table_rows(heading: str) -> list[list[str]]:
    """The body rows of the table under ``heading``, each as its cells."""
    text = CONTRACT.read_text()
    assert heading in text, f"{CONTRACT} has no section {heading!r}"
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] not in ("FASHN name", "canonical (Skytells error_id)"):
                rows.append(cells)
    return rows


def test_every_api_level_row_of_the_contract_is_in_the_catalog_with_its_statuses() -> None:
    rows = _table_rows("## API-level")
    assert len(rows) == len(ErrorId), "the contract and the catalog list different numbers of errors"
    assert {row[0] for row in rows} == set(ErrorId)
    for canonical, http, fashn, _condition in rows:
        spec = API_ERRORS[ErrorId(canonical)]
        statuses = [int(s) for s in re.findall(r"\d{3}", http)]
        assert spec.http_status in statuses, canonical
        name = fashn.split(" ")[0]
        assert spec.fashn_name == name, canonical
        explicit = re.search(r"\((\d{3})\)", fashn)
        if explicit:
            assert spec.fashn_status == int(explicit.group(1)), canonical


def test_every_runtime_row_of_the_contract_is_in_the_catalog() -> None:
    rows = _table_rows("## Prediction-level")
    named = [r for r in rows if not r[0].startswith("(")]
    for fashn_name, skytells_id, _condition in named:
        name = fashn_name.split(" ")[0]
        assert RUNTIME_ERRORS[name].error_id == ErrorId(skytells_id), name
    # The one unnamed row is the deadline: the catalog names it DeadlineExceeded (FASHN status time_out).
    (deadline,) = [r for r in rows if r[0].startswith("(")]
    assert "time_out" in deadline[0]
    assert DEADLINE_EXCEEDED.error_id == ErrorId(deadline[1])
    assert {r[0].split(" ")[0] for r in named} | {DEADLINE_EXCEEDED.name} == set(RUNTIME_ERRORS)


def test_fashn_statuses_follow_the_seed_page() -> None:
    assert FASHN_STATUS["BadRequest"] == 400
    assert FASHN_STATUS["OutOfCredits"] == 429
    assert API_ERRORS[ErrorId.INSUFFICIENT_CREDITS].fashn_status == 429
    assert API_ERRORS[ErrorId.PREDICTION_NOT_CANCELLABLE].fashn_status == 400


@pytest.mark.parametrize("error_id", list(ErrorId))
def test_retryability_is_declared_and_429_503_are_retryable(error_id: ErrorId) -> None:
    spec = API_ERRORS[error_id]
    if error_id in (
        ErrorId.RATE_LIMIT_EXCEEDED,
        ErrorId.CONCURRENCY_LIMIT_EXCEEDED,
        ErrorId.MODEL_UNAVAILABLE,
    ):
        assert spec.retryable
    if spec.http_status in (400, 401, 403, 404, 409):
        assert not spec.retryable


@pytest.mark.parametrize("error_id", sorted(CONNECTION_ERRORS))
def test_the_connections_own_refusals_keep_their_http_status_on_both_surfaces(error_id: ErrorId) -> None:
    spec = API_ERRORS[error_id]
    assert spec.fashn_status == spec.http_status
    assert spec.http_status in (408, 414, 431, 503)


def test_concurrency_limit_answers_rate_limit_id_on_the_skytells_surface() -> None:
    spec = API_ERRORS[ErrorId.CONCURRENCY_LIMIT_EXCEEDED]
    assert spec.wire_error_id is ErrorId.RATE_LIMIT_EXCEEDED
    assert spec.fashn_name == "ConcurrencyLimitExceeded"


def test_model_errors_carry_their_catalog_identity() -> None:
    assert PoseError.spec().error_id is ErrorId.UNPROCESSABLE_ENTITY

    class LoraLoadError(ModelError):
        name = "LoraLoadError"
        error_id = ErrorId.UNPROCESSABLE_ENTITY

    spec = LoraLoadError.spec()
    assert (spec.name, spec.error_id) == ("LoraLoadError", ErrorId.UNPROCESSABLE_ENTITY)
    assert ModelError.spec().name == "PipelineError"
