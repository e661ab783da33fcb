"""The official Skytells Python SDK (``skytells==1.0.0``) against a live predictd: only the SDK speaks HTTP.

Every call goes through ``skytells.Skytells(key, base_url=...)`` exactly as a user would write it; the only
non-SDK access is the store (to revoke a key) and a raw SQLite connection (to make the server's writes fail).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import skytells

from ..conftest import Server, revoke_key_of

SDK_INTERVAL = {"interval": 50}


# -- helpers -----------------------------------------------------------------------------------------------


def sdk(server: Server, key: str | None, **kwargs: Any) -> skytells.SkytellsClient:
    return skytells.Skytells(key, base_url=server.base_url + "/v1", timeout=30_000, **kwargs)


@pytest.fixture(scope="module")
def client(server: Server) -> skytells.SkytellsClient:
    """A client of one account shared by the tests that do not count predictions."""
    return sdk(server, server.key())


@pytest.fixture
def fresh(server: Server) -> Callable[[], skytells.SkytellsClient]:
    """Clients of new accounts, so that listings are exact."""
    return lambda: sdk(server, server.key())


def expect_error(
    call: Callable[[], object], error_id: str, http_status: int | None = None
) -> skytells.SkytellsError:
    with pytest.raises(skytells.SkytellsError) as caught:
        call()
    error = caught.value
    assert error.error_id == error_id, repr(error)
    if http_status is not None:
        assert error.http_status == http_status, repr(error)
    assert str(error).strip(), repr(error)
    return error


def poll_until(
    client: skytells.SkytellsClient,
    prediction_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    current = client.predictions.get(prediction_id)
    while not done(current):
        assert time.monotonic() < deadline, f"gave up waiting; last state {current}"
        time.sleep(0.05)
        current = client.predictions.get(prediction_id)
    return current


def created_day(prediction: dict[str, Any]) -> date:
    return datetime.fromisoformat(prediction["created_at"].replace("Z", "+00:00")).astimezone(UTC).date()


# -- running predictions -----------------------------------------------------------------------------------


def test_run_awaits_and_returns_the_output(client: skytells.SkytellsClient) -> None:
    prediction = client.run("echo", input={"text": "hello, skytells"})

    assert isinstance(prediction, skytells.Prediction)
    assert prediction.status == "succeeded"
    assert prediction.output == "hello, skytells"
    assert prediction.outputs() == "hello, skytells"
    raw = prediction.raw()
    assert raw["model"] == "echo"
    assert raw["input"] == {"text": "hello, skytells"}
    assert raw["error"] is None
    assert raw["data_removed"] is False
    assert prediction.id.strip()


def test_create_then_wait_then_get(client: skytells.SkytellsClient) -> None:
    created = client.predictions.create({"model": "sleep", "input": {"ms": 200}})
    assert created["status"] in {"pending", "processing"}
    assert created["output"] is None

    finished = client.wait(created, SDK_INTERVAL)
    assert finished["id"] == created["id"]
    assert finished["status"] == "succeeded"
    assert finished["output"] == "slept 200 ms"

    fetched = client.predictions.get(created["id"])
    assert fetched["id"] == created["id"]
    assert fetched["status"] == "succeeded"
    assert fetched["output"] == finished["output"]
    assert fetched["input"] == {"ms": 200}
    metrics = fetched["metrics"]
    for name in ("predict_time", "total_time"):
        assert isinstance(metrics[name], int | float), metrics
        assert not isinstance(metrics[name], bool), metrics
    assert 0.2 <= metrics["predict_time"] <= metrics["total_time"] < 30, metrics
    assert fetched["created_at"]
    assert fetched["started_at"]
    assert fetched["completed_at"]


def test_run_of_a_failing_model_raises_prediction_failed(client: skytells.SkytellsClient) -> None:
    error = expect_error(lambda: client.run("raises", input={"kind": "pose"}), "PREDICTION_FAILED")
    # The SDK puts the prediction id in its details; the failed prediction itself is readable.
    prediction_id = error.details.removeprefix("Prediction ").removesuffix(" failed")
    failed = client.predictions.get(prediction_id)
    assert failed["status"] == "failed"
    assert failed["error_name"] == "PoseError"
    assert failed["error_id"] == "UNPROCESSABLE_ENTITY"
    assert failed["error"]
    assert failed["output"] is None


# -- listing -----------------------------------------------------------------------------------------------


def test_list_filters_by_model_and_date(fresh: Callable[[], skytells.SkytellsClient]) -> None:
    client = fresh()
    echoes = [client.predictions.create({"model": "echo", "input": {"text": f"e{i}"}}) for i in range(3)]
    sleeps = [client.predictions.create({"model": "sleep", "input": {"ms": 10}}) for _ in range(2)]
    everything = echoes + sleeps

    page = client.predictions.list(model="sleep")
    assert {p["id"] for p in page.data} == {p["id"] for p in sleeps}
    assert all(p["model"] == "sleep" for p in page.data)
    assert (page.pagination.total, page.pagination.last_page, page.pagination.current_page) == (2, 1, 1)
    assert page.pagination.per_page == 20

    page = client.predictions.list(model="echo")
    assert {p["id"] for p in page.data} == {p["id"] for p in echoes}
    assert page.pagination.total == 3

    page = client.predictions.list()
    assert [p["id"] for p in page.data] == [p["id"] for p in reversed(everything)], "newest first"
    assert (page.pagination.total, page.pagination.last_page) == (5, 1)

    days = sorted({created_day(p) for p in everything})  # today's UTC date (two days only around midnight)
    assert days[0] <= datetime.now(UTC).date() <= days[-1] + timedelta(days=1)
    first, last = days[0].isoformat(), days[-1].isoformat()

    page = client.predictions.list(since=first, until=last)
    assert {p["id"] for p in page.data} == {p["id"] for p in everything}
    assert page.pagination.total == 5
    page = client.predictions.list(since=first, until=last, model="sleep")
    assert page.pagination.total == 2
    page = client.predictions.list(until=last)
    assert page.pagination.total == 5
    page = client.predictions.list(options={"since": first, "model": "echo"})
    assert page.pagination.total == 3

    tomorrow = (days[-1] + timedelta(days=1)).isoformat()
    page = client.predictions.list(since=tomorrow)
    assert page.data == []
    assert page.pagination.total == 0
    yesterday = (days[0] - timedelta(days=1)).isoformat()
    page = client.predictions.list(until=yesterday)
    assert page.data == []
    assert page.pagination.total == 0

    page = client.predictions.list(model="nope")
    assert page.data == []
    assert page.pagination.total == 0


def test_list_paginates_with_the_default_page_size(fresh: Callable[[], skytells.SkytellsClient]) -> None:
    client = fresh()
    created = [client.predictions.create({"model": "echo", "input": {"text": f"p{i}"}}) for i in range(25)]
    newest_first = [p["id"] for p in reversed(created)]

    first = client.predictions.list()
    assert (first.pagination.current_page, first.pagination.per_page) == (1, 20)
    assert (first.pagination.total, first.pagination.last_page) == (25, 2)
    assert [p["id"] for p in first.data] == newest_first[:20]

    second = client.predictions.list(page=2)
    assert (second.pagination.current_page, second.pagination.total, second.pagination.last_page) == (
        2,
        25,
        2,
    )
    assert [p["id"] for p in second.data] == newest_first[20:]

    beyond = client.predictions.list(page=3)
    assert beyond.data == []
    assert beyond.pagination.total == 25

    for prediction in created:
        assert client.wait(prediction, SDK_INTERVAL)["status"] == "succeeded"


# -- cancel and delete -------------------------------------------------------------------------------------


def test_cancel_a_running_prediction_stops_its_worker(client: skytells.SkytellsClient) -> None:
    created = client.predictions.create({"model": "sleep", "input": {"ms": 20_000}})
    poll_until(client, created["id"], lambda p: p["status"] != "pending", timeout=15)
    assert client.predictions.get(created["id"])["status"] == "processing"

    started = time.monotonic()
    cancelled = client.cancel_prediction(created["id"])
    assert cancelled["id"] == created["id"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["output"] is None
    assert cancelled["completed_at"]

    # "sleep" has two workers: two short sleeps both finish quickly only if the cancelled worker is free.
    followers = [client.predictions.create({"model": "sleep", "input": {"ms": 100}}) for _ in range(2)]
    for follower in followers:
        done = client.wait(follower, {"interval": 50, "max_wait": 15_000})
        assert done["status"] == "succeeded", done
    assert time.monotonic() - started < 10, "the cancelled prediction kept its worker busy"

    after = client.predictions.get(created["id"])
    assert after["status"] == "cancelled"
    assert after["output"] is None
    assert after["completed_at"] == cancelled["completed_at"]


def test_prediction_object_cancel(client: skytells.SkytellsClient) -> None:
    created = client.predictions.create({"model": "sleep", "input": {"ms": 20_000}})
    prediction = skytells.Prediction(client._http, created)
    answer = prediction.cancel()
    assert answer["status"] == "cancelled"
    assert client.predictions.get(created["id"])["status"] == "cancelled"


def test_delete_removes_inputs_and_outputs(client: skytells.SkytellsClient) -> None:
    prediction = client.run("echo", input={"text": "secret"})
    deleted = client.delete_prediction(prediction.id)
    assert deleted["id"] == prediction.id
    assert deleted["data_removed"] is True
    assert deleted["input"] is None
    assert deleted["output"] is None
    assert deleted["status"] == "succeeded"

    again = client.predictions.get(prediction.id)
    assert (again["data_removed"], again["input"], again["output"]) == (True, None, None)

    second = client.run("echo", input={"text": "also secret"})
    assert second.delete()["data_removed"] is True


# -- models ------------------------------------------------------------------------------------------------


def test_models_list_and_get(client: skytells.SkytellsClient) -> None:
    models = client.models.list(fields=["input_schema"])
    assert isinstance(models, list)
    by_slug = {m["slug"]: m for m in models}
    assert {"echo", "sleep"} <= set(by_slug)
    for slug in ("echo", "sleep"):
        assert isinstance(by_slug[slug]["input_schema"], dict)
        assert "output_schema" not in by_slug[slug]
    assert "text" in by_slug["echo"]["input_schema"]["properties"]
    assert "ms" in by_slug["sleep"]["input_schema"]["properties"]

    plain = client.models.list()
    assert {"echo", "sleep"} <= {m["slug"] for m in plain}
    assert all("input_schema" not in m for m in plain)

    echo = client.models.get("echo")
    assert echo["slug"] == "echo"
    assert echo["status"] == "available"

    sleep = client.models.get("sleep", fields=["input_schema", "output_schema"])
    assert sleep["slug"] == "sleep"
    assert isinstance(sleep["input_schema"], dict)
    assert isinstance(sleep["output_schema"], dict)
    assert sleep["input_schema"]["properties"]["ms"]["type"] == "integer"


# -- API-level errors --------------------------------------------------------------------------------------


def test_invalid_input(client: skytells.SkytellsClient) -> None:
    error = expect_error(lambda: client.run("echo", input={"wrong": 1}), "INVALID_INPUT", 400)
    assert "wrong" in str(error) or "text" in str(error), str(error)
    error = expect_error(lambda: client.run("sleep", input={"ms": "soon"}), "INVALID_INPUT", 400)
    assert "ms" in str(error), str(error)


def test_invalid_parameter(client: skytells.SkytellsClient) -> None:
    expect_error(lambda: client.predictions.list(page=0), "INVALID_PARAMETER", 400)
    expect_error(lambda: client.models.list(fields=["weights"]), "INVALID_PARAMETER", 400)


def test_unsupported_media_type(server: Server, client: skytells.SkytellsClient) -> None:
    key = client._http._api_key
    plain_text = sdk(server, key, headers={"Content-Type": "text/plain"})
    expect_error(
        lambda: plain_text.predict({"model": "echo", "input": {"text": "x"}, "await": True}),
        "UNSUPPORTED_MEDIA_TYPE",
        400,
    )


def test_missing_required_field(client: skytells.SkytellsClient) -> None:
    error = expect_error(lambda: client.predict({"input": {"text": "x"}}), "MISSING_REQUIRED_FIELD", 400)
    assert "model" in str(error)


def test_invalid_date_format(client: skytells.SkytellsClient) -> None:
    expect_error(lambda: client.predictions.list(since="yesterday"), "INVALID_DATE_FORMAT", 400)
    expect_error(lambda: client.predictions.list(until="2026-13-45"), "INVALID_DATE_FORMAT", 400)


def test_invalid_date_range(client: skytells.SkytellsClient) -> None:
    expect_error(
        lambda: client.predictions.list(since="2026-11-22", until="2026-11-01"), "INVALID_DATE_RANGE", 400
    )


def test_unauthorized(server: Server) -> None:
    expect_error(lambda: sdk(server, "pd_not-a-real-key").models.list(), "UNAUTHORIZED", 401)
    expect_error(lambda: sdk(server, None).run("echo", input={"text": "x"}), "UNAUTHORIZED", 401)

    secret = server.key()
    revocable = sdk(server, secret)
    assert revocable.run("echo", input={"text": "before"}).output == "before"
    server.with_database(lambda db: revoke_key_of(db, secret))
    expect_error(lambda: revocable.run("echo", input={"text": "after"}), "UNAUTHORIZED", 401)
    expect_error(lambda: revocable.predictions.list(), "UNAUTHORIZED", 401)


def test_model_not_found(client: skytells.SkytellsClient) -> None:
    expect_error(lambda: client.models.get("nope"), "MODEL_NOT_FOUND", 404)
    expect_error(lambda: client.run("nope", input={"text": "x"}), "MODEL_NOT_FOUND", 404)
    expect_error(lambda: client.predictions.create({"model": "nope", "input": {}}), "MODEL_NOT_FOUND", 404)


def test_prediction_not_found(
    client: skytells.SkytellsClient, fresh: Callable[[], skytells.SkytellsClient]
) -> None:
    expect_error(lambda: client.predictions.get("does-not-exist"), "PREDICTION_NOT_FOUND", 404)
    expect_error(lambda: client.cancel_prediction("does-not-exist"), "PREDICTION_NOT_FOUND", 404)
    expect_error(lambda: client.delete_prediction("does-not-exist"), "PREDICTION_NOT_FOUND", 404)

    # Another account's real prediction is reported exactly like a missing one, and left untouched.
    other = fresh()
    theirs = other.predictions.create({"model": "sleep", "input": {"ms": 300}})
    expect_error(lambda: client.predictions.get(theirs["id"]), "PREDICTION_NOT_FOUND", 404)
    expect_error(lambda: client.cancel_prediction(theirs["id"]), "PREDICTION_NOT_FOUND", 404)
    expect_error(lambda: client.delete_prediction(theirs["id"]), "PREDICTION_NOT_FOUND", 404)
    assert all(p["id"] != theirs["id"] for p in client.predictions.list().data)
    finished = other.wait(theirs, SDK_INTERVAL)
    assert finished["status"] == "succeeded"
    assert finished["data_removed"] is False


def test_unknown_route_is_not_found(client: skytells.SkytellsClient) -> None:
    expect_error(lambda: client._http.request("GET", "/no-such-route"), "NOT_FOUND", 404)


def test_cancel_of_a_finished_prediction_is_not_cancellable(client: skytells.SkytellsClient) -> None:
    prediction = client.run("echo", input={"text": "done"})
    error = expect_error(lambda: client.cancel_prediction(prediction.id), "PREDICTION_NOT_CANCELLABLE", 409)
    assert "succeeded" in str(error)
    expect_error(prediction.cancel, "PREDICTION_NOT_CANCELLABLE", 409)
    assert client.predictions.get(prediction.id)["status"] == "succeeded"


def test_a_model_whose_setup_fails_is_unavailable(client: skytells.SkytellsClient) -> None:
    # Its setup raises on every start: the contract's MODEL_UNAVAILABLE at the contract's 500.
    expect_error(lambda: client.run("broken", input={"text": "x"}), "MODEL_UNAVAILABLE", 500)
    expect_error(
        lambda: client.predictions.create({"model": "broken", "input": {"text": "x"}}),
        "MODEL_UNAVAILABLE",
        500,
    )


def test_contention_is_a_retryable_503_and_the_server_recovers(make_server: Callable[..., Server]) -> None:
    server = make_server("sqlite_busy_timeout_ms = 200\npostgres_lock_timeout_ms = 200\n", name="busy")
    client = sdk(server, server.key())
    assert client.run("echo", input={"text": "warm"}).output == "warm"

    with server.database_write_lock():
        error = expect_error(lambda: client.run("echo", input={"text": "x"}), "SERVICE_UNAVAILABLE", 503)
    message = f"{error} {error.details}"
    assert "retry in 1 s" in message
    assert "Traceback" not in message
    assert "sqlite" not in message.lower()
    assert "asyncpg" not in message.lower()

    assert client.run("echo", input={"text": "after"}).output == "after"


def test_internal_error_hides_details_and_the_server_recovers(make_server: Callable[..., Server]) -> None:
    server = make_server(name="broken_table")
    client = sdk(server, server.key())
    assert client.run("echo", input={"text": "warm"}).output == "warm"

    with server.table_renamed_away("predictions"):
        error = expect_error(lambda: client.run("echo", input={"text": "x"}), "INTERNAL_ERROR", 500)
    message = f"{error} {error.details}"
    assert "Traceback" not in message
    assert "predictions" not in message
    assert "sqlite" not in message.lower()
    assert "asyncpg" not in message.lower()

    assert client.run("echo", input={"text": "after"}).output == "after"
