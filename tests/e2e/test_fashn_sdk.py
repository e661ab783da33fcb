"""The official FASHN TypeScript SDK (``fashn@0.11.1``, run by Node) against a live predictd: run, status,
subscribe with creditsUsed, and each API-level error class from its real cause."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Server

DRIVER = Path(__file__).parent / "fashn" / "drive.mjs"


def fashn(server: Server, key: str | None, call: str, **request: Any) -> dict[str, Any]:
    payload = {"baseURL": server.base_url, "apiKey": key or "missing", "call": call, **request}
    completed = subprocess.run(
        ["node", str(DRIVER), json.dumps(payload)], capture_output=True, text=True, timeout=90, check=False
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def expect_error(result: dict[str, Any], error_class: str, status: int, name: str) -> dict[str, Any]:
    assert result["ok"] is False, result
    assert result["errorClass"] == error_class, result
    assert result["status"] == status, result
    body: dict[str, Any] = result["body"]
    assert body["error"] == name, body
    assert body["message"]
    assert "id" not in body
    assert "status" not in body
    return body


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key()


def test_run_then_status(server: Server, key: str) -> None:
    submitted = fashn(server, key, "run", model="echo", inputs={"text": "hello"})
    assert submitted["ok"], submitted
    assert submitted["data"]["error"] is None
    prediction_id = submitted["data"]["id"]
    for _ in range(100):
        status = fashn(server, key, "status", id=prediction_id)["data"]
        if status["status"] not in ("starting", "in_queue", "processing"):
            break
    assert status["status"] == "completed"
    assert status["output"] == ["hello"]
    assert status["error"] is None
    assert status["creditsHeader"] == "1"


def test_subscribe_reads_credits_used(server: Server, key: str) -> None:
    result = fashn(server, key, "subscribe", model="sleep", inputs={"ms": 300})
    assert result["ok"], result
    data = result["data"]
    assert data["status"] == "completed"
    assert data["output"] == ["slept 300 ms"]
    assert data["creditsUsed"] == 1
    assert "processing" in data["seen"] or "in_queue" in data["seen"]


def test_subscribe_to_a_failing_prediction(server: Server, key: str) -> None:
    data = fashn(server, key, "subscribe", model="raises", inputs={"kind": "pose"})["data"]
    assert data["status"] == "failed"
    assert data["error"]["name"] == "PoseError"
    assert data["output"] is None
    assert data["creditsUsed"] == 0


def test_bad_request(server: Server, key: str) -> None:
    body = expect_error(
        fashn(server, key, "run", model="echo", inputs={"txt": 1}), "BadRequestError", 400, "BadRequest"
    )
    assert "txt" in body["message"]


def test_authentication_error(server: Server) -> None:
    expect_error(
        fashn(server, "pd_wrong", "run", model="echo", inputs={"text": "x"}),
        "AuthenticationError",
        401,
        "UnauthorizedAccess",
    )


def test_not_found(server: Server, key: str) -> None:
    expect_error(fashn(server, key, "run", model="tryon-v9", inputs={}), "NotFoundError", 404, "NotFound")
    expect_error(fashn(server, key, "status", id="no-such-id"), "NotFoundError", 404, "NotFound")


def test_rate_limit_error(make_server: Any) -> None:
    limited = make_server("rate_limit = 2\nrate_window_s = 60\n")
    key = limited.key()
    for _ in range(2):
        assert fashn(limited, key, "run", model="echo", inputs={"text": "x"})["ok"]
    body = expect_error(
        fashn(limited, key, "run", model="echo", inputs={"text": "x"}),
        "RateLimitError",
        429,
        "RateLimitExceeded",
    )
    assert body["retryable"] is True


def test_concurrency_limit_is_a_rate_limit_error(make_server: Any) -> None:
    limited = make_server("concurrency_limit = 1\n")
    key = limited.key()
    assert fashn(limited, key, "run", model="sleep", inputs={"ms": 3000})["ok"]
    expect_error(
        fashn(limited, key, "run", model="sleep", inputs={"ms": 10}),
        "RateLimitError",
        429,
        "ConcurrencyLimitExceeded",
    )


def test_contention_is_a_retryable_service_unavailable(make_server: Any) -> None:
    locked = make_server("sqlite_busy_timeout_ms = 200\npostgres_lock_timeout_ms = 200\n")
    key = locked.key()
    with locked.database_write_lock():
        body = expect_error(
            fashn(locked, key, "run", model="echo", inputs={"text": "x"}),
            "InternalServerError",  # the SDK's class for every 5xx
            503,
            "ServiceUnavailable",
        )
        assert "Traceback" not in body["message"]
    assert fashn(locked, key, "run", model="echo", inputs={"text": "x"})["ok"]


def test_internal_server_error(make_server: Any) -> None:
    broken = make_server()
    key = broken.key()
    with broken.table_renamed_away("predictions"):
        body = expect_error(
            fashn(broken, key, "run", model="echo", inputs={"text": "x"}),
            "InternalServerError",
            500,
            "InternalServerError",
        )
        assert "Traceback" not in body["message"]
        assert "predictions" not in body["message"]
    assert fashn(broken, key, "run", model="echo", inputs={"text": "x"})["ok"]


def test_model_unavailable_is_an_internal_server_error(server: Server, key: str) -> None:
    expect_error(
        fashn(server, key, "run", model="broken", inputs={"text": "x"}),
        "InternalServerError",
        500,
        "InternalServerError",
    )
