"""Edge values at the HTTP edge (issue #22, items 6-8), on both backends alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from predictd.errors import ErrorId

from ..conftest import FIXTURE_MODELS, FIXTURE_MODELS_TOML, Server
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

ADMIN_KEY = "adm_edge_values_suite_0a1b2c3d4e5f60718293"
CONFIG = f"""
admin_key = "{ADMIN_KEY}"
{FIXTURE_MODELS_TOML}
[[models]]
slug = "nul"
ref = "{FIXTURE_MODELS}:Nul"
timeout_s = 20
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    srv = Server(workdir=tmp_path_factory.mktemp("edge"), config=CONFIG, backend=backend).start()
    yield srv
    srv.destroy()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.key()) as c:
        yield c


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("to", "9999-12-31"),
        ("from", "9999-12-31T23:59:59-23:59"),
        ("to", "0001-01-01T00:00:00+23:59"),
        ("since", "0001-01-01"),
        ("until", "9999-12-31T23:59:59.999999-01:00"),
    ],
)
def test_dates_beyond_what_can_be_stored_are_400_naming_the_parameter(
    client: httpx.Client, name: str, value: str
) -> None:
    response = client.get("/v1/predictions", params={name: value})
    assert_error(response, ErrorId.INVALID_PARAMETER, repr(name))


def test_console_date_filters_beyond_the_calendar_are_named_on_the_page(server: Server) -> None:
    from .test_console import sign_in

    signed = sign_in(server, server.key())
    try:
        for name, value in (("to", "9999-12-31"), ("from", "0001-01-01T00:00:00+23:59")):
            page = signed.get("/console/predictions", params={name: value})
            assert page.status_code == 200, page.text[:300]
            assert f"Query parameter &#39;{name}&#39; must be between 0001-01-02 and 9999-12-30" in page.text
    finally:
        signed.close()


@pytest.mark.parametrize("url", ["http://x:abc/", "http://x:99999/", "http://[::1/"])
def test_webhook_urls_that_are_not_urls_are_400_naming_the_field(client: httpx.Client, url: str) -> None:
    body = {"model": "echo", "input": {"text": "x"}, "webhook": {"url": url}}
    assert_error(client.post("/v1/predictions", json=body), ErrorId.INVALID_INPUT, "webhook.url")
    run = {"model_name": "echo", "inputs": {"text": "x"}}
    response = client.post("/v1/run", params={"webhook_url": url}, json=run)
    assert_fashn_error(response, ErrorId.INVALID_INPUT, "webhook_url")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_webhook_receivers_the_address_guard_refuses_are_refused_at_submit(
    client: httpx.Client, url: str
) -> None:
    """Under the default (strict) [webhooks] settings: a 400 naming the setting, not three days of retries."""
    body = {"model": "echo", "input": {"text": "x"}, "webhook": {"url": url}}
    assert_error(
        client.post("/v1/predictions", json=body), ErrorId.INVALID_INPUT, "webhook.url", "allow_private"
    )
    run = {"model_name": "echo", "inputs": {"text": "x"}}
    response = client.post("/v1/run", params={"webhook_url": url}, json=run)
    assert_fashn_error(response, ErrorId.INVALID_INPUT, "webhook_url", "[webhooks] allow_private")


def test_a_public_webhook_receiver_is_accepted(client: httpx.Client) -> None:
    body = {"model": "echo", "input": {"text": "x"}, "webhook": {"url": "https://hooks.example.test/h"}}
    assert client.post("/v1/predictions", json=body).status_code == 201


@pytest.mark.parametrize("amount", [1e300, -1e300, 1e10])
def test_credit_amounts_beyond_the_bound_are_400_naming_the_field(admin: httpx.Client, amount: float) -> None:
    admin.post("/admin/v1/accounts", json={"name": "rich"})
    response = admin.post("/admin/v1/accounts/rich/credits", json={"amount": amount, "kind": "adjust"})
    assert_error(response, ErrorId.INVALID_INPUT, "amount")
    assert admin.get("/admin/v1/accounts/rich").json()["credits"]["balance"] == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_window_s", 1e308),
        ("rate_window_s", 365 * 86400 + 1),
        ("rate_limit", 2**31),
        ("key_rate_limit", 10**30),
        ("concurrency_limit", 2**40),
    ],
)
def test_plan_numbers_beyond_their_bounds_are_400_naming_the_field(
    admin: httpx.Client, server: Server, field: str, value: float
) -> None:
    body = {"rate_limit": 5, field: value}
    response = admin.put("/admin/v1/plans/huge", json=body)
    assert_error(response, ErrorId.INVALID_INPUT, field)
    assert all(p["name"] != "huge" for p in admin.get("/admin/v1/plans").json()["data"])


def test_a_year_long_rate_window_serves_its_plan(admin: httpx.Client, server: Server) -> None:
    """The largest window allowed works end to end: the plan's requests are answered, not 500s."""
    yearly = {"rate_limit": 3, "rate_window_s": 365 * 86400}
    assert admin.put("/admin/v1/plans/yearly", json=yearly).status_code == 200
    admin.post("/admin/v1/accounts", json={"name": "yearly-co", "plan": "yearly"})
    key = admin.post("/admin/v1/accounts/yearly-co/keys", json={}).json()["key"]
    with server.client(key) as c:
        statuses = [c.get("/v1/models").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


# -- NUL characters (item 6) ---------------------------------------------------------------------------------


def test_a_nul_anywhere_in_a_request_is_a_400_naming_where(client: httpx.Client, admin: httpx.Client) -> None:
    """PostgreSQL stores no NUL; both backends refuse one alike, at the edge, never with a 500."""
    nul = "a\x00b"
    body = {"model": "echo", "input": {"text": nul}}
    assert_error(client.post("/v1/predictions", json=body), ErrorId.INVALID_INPUT, "'input.text'", "NUL")
    run = {"model_name": "echo", "inputs": {"text": nul}}
    assert_fashn_error(client.post("/v1/run", json=run), ErrorId.INVALID_INPUT, "'inputs.text'", "NUL")
    hooked = {"model": "echo", "input": {"text": "x"}, "webhook": {"url": f"https://{nul}.example/"}}
    assert_error(client.post("/v1/predictions", json=hooked), ErrorId.INVALID_INPUT, "'webhook.url'")
    keyed = {"model": "echo", "input": {"text": "x", nul: 1}}
    assert_error(client.post("/v1/predictions", json=keyed), ErrorId.INVALID_INPUT, "NUL")
    for path in ("/v1/predictions/abc%00", "/v1/predictions/abc%00/cancel", "/v1/model/ec%00ho"):
        response = client.request("POST" if path.endswith("cancel") else "GET", path)
        assert_error(response, ErrorId.INVALID_PARAMETER, "Path segment", "NUL")
    assert_fashn_error(client.get("/v1/status/abc%00"), ErrorId.INVALID_PARAMETER, "Path segment")
    listed = client.get("/v1/predictions", params={"model": nul})
    assert_error(listed, ErrorId.INVALID_PARAMETER, "Query parameter 'model'", "NUL")
    hook_param = client.post("/v1/run", params={"webhook_url": f"https://h/{nul}"}, json=run | {"inputs": {}})
    assert_fashn_error(hook_param, ErrorId.INVALID_PARAMETER, "Query parameter 'webhook_url'")
    # The operator's API: names in bodies and in paths, notes, plan models.
    assert_error(admin.post("/admin/v1/accounts", json={"name": nul}), ErrorId.INVALID_INPUT, "'name'")
    assert_error(admin.get("/admin/v1/accounts/a%00b"), ErrorId.INVALID_PARAMETER, "Path segment")
    plan = admin.put("/admin/v1/plans/p", json={"models": ["echo", nul]})
    assert_error(plan, ErrorId.INVALID_INPUT, "'models[1]'")
    admin.post("/admin/v1/accounts", json={"name": "noted"})
    noted = admin.post("/admin/v1/accounts/noted/credits", json={"amount": 1, "note": nul})
    assert_error(noted, ErrorId.INVALID_INPUT, "'note'")
    # Nothing of it was stored, and the server serves on.
    assert all(a["name"] != nul for a in admin.get("/admin/v1/accounts").json()["data"])
    done = client.post("/v1/predictions", json={"model": "echo", "input": {"text": "ok"}, "await": True})
    assert done.json()["status"] == "succeeded"


def test_a_console_form_with_a_nul_is_refused_naming_the_field(server: Server) -> None:
    from .test_console import csrf_of, sign_in

    signed = sign_in(server, server.key())
    try:
        answer = signed.post("/console/keys", data={"label": "a\x00b", "csrf": csrf_of(signed)})
        assert answer.status_code == 400, answer.text[:300]
        assert "Form field &#39;label&#39; contains a NUL character" in answer.text
    finally:
        signed.close()


@pytest.mark.parametrize(("kind", "where"), [("output", "at output,"), ("nested", "at output.items[1]")])
def test_an_output_holding_a_nul_fails_its_prediction_by_name_and_frees_its_slot(
    admin: httpx.Client, server: Server, kind: str, where: str
) -> None:
    """Scaled out this looped for ever (PostgreSQL refused the write; the slot stayed jammed past the
    deadline, through cancel and restart). Now: failed by name, well within the model's 20 s deadline, on
    both backends; the account's only slot and the model's worker both take the next prediction."""
    admin.put("/admin/v1/plans/single", json={"concurrency_limit": 1})
    admin.post("/admin/v1/accounts", json={"name": f"nul-{kind}", "plan": "single"})
    key = admin.post(f"/admin/v1/accounts/nul-{kind}/keys", json={}).json()["key"]
    with server.client(key) as c:
        started = time.monotonic()
        body = {"model": "nul", "input": {"kind": kind}, "await": True}
        failed = c.post("/v1/predictions", json=body).json()
        assert time.monotonic() - started < 10, failed
        assert failed["status"] == "failed", failed
        assert failed["error_name"] == "PipelineError"
        assert "NUL character" in failed["error"], failed["error"]
        assert where in failed["error"], failed["error"]
        assert c.get(f"/v1/status/{failed['id']}").json()["status"] == "failed"
        for model, inputs in (("echo", {"text": "next"}), ("nul", {"kind": "raise"})):
            after = c.post("/v1/predictions", json={"model": model, "input": inputs, "await": True}).json()
            assert after["status"] in ("succeeded", "failed"), after
        assert after["error"] == "ValueError: bad\\u0000byte", after["error"]
        assert c.get("/v1/account").json()["in_flight"] == 0


# -- contention (item 8) -------------------------------------------------------------------------------------

BUSY_TOML = """
sqlite_busy_timeout_ms = 300
postgres_lock_timeout_ms = 300
"""


def assert_busy(response: httpx.Response, fashn: bool = False) -> None:
    """503 with Retry-After, retryable: contention is a reason to come back, never a 500."""
    if fashn:
        assert_fashn_error(response, ErrorId.SERVICE_UNAVAILABLE, "database is busy")
    else:
        assert_error(response, ErrorId.SERVICE_UNAVAILABLE, "database is busy")
    assert response.status_code == 503
    assert response.json()["retryable"] is True
    assert int(response.headers["retry-after"]) >= 1


def test_writes_against_a_locked_database_are_503_with_retry_after(make_server: Any) -> None:
    """Another connection holds the write lock past the busy / lock timeout (SQLite BEGIN IMMEDIATE;
    PostgreSQL LOCK TABLE ... EXCLUSIVE): each surface answers 503 + Retry-After, retryable; once the lock is
    gone the same requests succeed."""
    server = make_server(f'admin_key = "{ADMIN_KEY}"\n{BUSY_TOML}')
    key = server.key()
    with (
        server.client(key) as c,
        httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin,
    ):
        with server.database_write_lock():
            started = time.monotonic()
            assert_busy(c.post("/v1/predictions", json={"model": "echo", "input": {"text": "locked"}}))
            assert time.monotonic() - started < 5
            assert_busy(
                c.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "locked"}}), fashn=True
            )
            assert_busy(c.post("/v1/webhooks/secret/rotate"))
            assert_busy(admin.post("/admin/v1/accounts", json={"name": "while-locked"}))
        assert c.post("/v1/predictions", json={"model": "echo", "input": {"text": "free"}}).status_code == 201
        assert admin.post("/admin/v1/accounts", json={"name": "after-lock"}).status_code == 201
    assert "database busy; answered 503" in server.log()


def test_database_failures_are_told_apart_from_real_ones(tmp_path: Any, pg_database: str) -> None:
    """store/failures.py on the real engines' own errors: contention (a 503 to retry) and a refused value
    (a run failed by name) on SQLite and PostgreSQL, nothing for any other failure."""
    import asyncio
    import sqlite3

    import asyncpg

    from predictd.store import contention, unstorable

    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (n INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    with pytest.raises(OverflowError) as too_big:
        other.execute("INSERT INTO t VALUES (?)", (2**70,))
    with pytest.raises(sqlite3.OperationalError) as missing:
        other.execute("INSERT INTO nowhere VALUES (1)")
    assert contention(locked.value) is not None
    assert unstorable(locked.value) is None
    assert unstorable(too_big.value) is not None
    assert contention(too_big.value) is None
    assert contention(missing.value) is None
    assert unstorable(missing.value) is None

    async def postgres() -> tuple[BaseException, BaseException]:
        url = pg_database.replace("+asyncpg", "")
        first, second = await asyncpg.connect(url), await asyncpg.connect(url)
        try:
            await first.execute("CREATE TABLE t (v jsonb)")
            with pytest.raises(asyncpg.PostgresError) as nul:
                await second.execute("INSERT INTO t VALUES ($1::jsonb)", '"a\\u0000b"')
            async with first.transaction():
                await first.execute("LOCK TABLE t IN EXCLUSIVE MODE")
                await second.execute("SET lock_timeout = 100")
                with pytest.raises(asyncpg.PostgresError) as lock:
                    await second.execute("INSERT INTO t VALUES ('1')")
            return nul.value, lock.value
        finally:
            await first.close()
            await second.close()

    refused, lock = asyncio.run(postgres())
    assert unstorable(refused) is not None
    assert contention(refused) is None
    assert contention(lock) == "a lock held by another transaction past lock_timeout"
    assert unstorable(lock) is None
