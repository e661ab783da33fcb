"""The web console's security boundaries over real HTTP (no browser): the session cookie, CSRF, origins,
redirects, headers, and tenant isolation. The browser-driven tests are in tests/e2e/test_console.py."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest

from predictd.api.sessions import ConsoleSessions, RedisConsoleSessions, SessionStore
from predictd.core import keys
from predictd.core.domain import Account, AccountStatus, Plan, Principal, utcnow
from predictd.core.redis_keys import RedisKeys
from predictd.deploy.scaled import connect
from predictd.store import Database

from ..conftest import FIXTURE_MODELS_TOML, REDIS_URL, Server, revoke_key_of

COOKIE = "predictd_console"


def console(server: Server, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30, follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def sign_in(server: Server, key: str) -> httpx.Client:
    client = console(server)
    answer = client.post("/console/login", data={"key": key})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/predictions"
    return client


def csrf_of(client: httpx.Client, path: str = "/console/keys") -> str:
    page = client.get(path)
    assert page.status_code == 200
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found is not None
    return found.group(1)


async def _key_rows(db: Database, key: str) -> list[tuple[str, bool]]:
    found = await db.accounts.find_key(keys.digest(key))
    assert found is not None
    return [(k.prefix, k.revoked_at is not None) for k in await db.accounts.list_keys(found[1].id)]


async def _set_status(db: Database, key: str, status: AccountStatus) -> None:
    found = await db.accounts.find_key(keys.digest(key))
    assert found is not None
    await db.accounts.update_account(found[1].id, status=status.value, status_reason="test")


@pytest.fixture
def key(server: Server) -> str:
    return server.key()


@pytest.fixture
def signed(server: Server, key: str) -> Iterator[httpx.Client]:
    client = sign_in(server, key)
    yield client
    client.close()


def test_the_cookie_is_http_only_strict_and_holds_a_random_token_not_the_key(
    server: Server, key: str
) -> None:
    with console(server) as client:
        answer = client.post("/console/login", data={"key": key})
    assert answer.status_code == 303
    set_cookie = answer.headers["set-cookie"]
    token = answer.cookies[COOKIE]
    assert key not in set_cookie
    assert keys.digest(key) not in set_cookie
    assert len(token) >= 40
    attributes = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain http here; https gets Secure
    assert key not in answer.text


def test_a_wrong_key_is_refused_and_sets_no_cookie(server: Server) -> None:
    with console(server) as client:
        answer = client.post("/console/login", data={"key": "pd_wrong"})
    assert answer.status_code == 401
    assert "The API key is invalid or has been revoked." in answer.text
    assert "set-cookie" not in answer.headers


def test_the_cookie_opens_get_routes_and_nothing_that_changes_state(
    server: Server, signed: httpx.Client
) -> None:
    csrf = csrf_of(signed, "/console/models/echo")
    run = signed.post(
        "/console/models/echo/run", json={"input": {"text": "via console"}}, headers={"x-csrf-token": csrf}
    )
    assert run.status_code == 201, run.text
    prediction_id = run.json()["id"]
    assert run.json()["prediction"]["source"] == "console"

    with signed.stream("GET", f"/v1/predictions/{prediction_id}/stream") as stream:
        assert stream.status_code == 200
        events = stream.read().decode()
    done = [line for line in events.splitlines() if line.startswith("data:")][-1]
    assert orjson.loads(done.removeprefix("data: "))["output"] == "via console"
    assert signed.get(f"/v1/predictions/{prediction_id}").json()["status"] == "succeeded"

    refused = [
        signed.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}}),
        signed.post("/v1/predict", json={"model": "echo", "input": {"text": "x"}}),
        signed.post(f"/v1/predictions/{prediction_id}/cancel"),
        signed.delete(f"/v1/predictions/{prediction_id}"),
        signed.post("/v1/webhooks/secret/rotate"),
        signed.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "x"}}),
    ]
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert refused[0].json()["error_id"] == "UNAUTHORIZED"
    assert signed.get(f"/v1/predictions/{prediction_id}").json()["data_removed"] is False


def test_a_key_header_is_judged_alone_whatever_the_cookie(server: Server, signed: httpx.Client) -> None:
    wrong = signed.get("/v1/account", headers={"x-api-key": "pd_wrong"})
    assert wrong.status_code == 401
    other = server.key("someone-else")
    assert (
        signed.get("/v1/account", headers={"authorization": f"Bearer {other}"}).json()["name"]
        == "someone-else"
    )


def test_console_posts_need_the_session_csrf_token_and_this_origin(
    server: Server, key: str, signed: httpx.Client
) -> None:
    csrf = csrf_of(signed)
    before = server.with_database(lambda db: _key_rows(db, key))
    attempts = [
        signed.post("/console/keys", data={"label": "no token"}),
        signed.post("/console/keys", data={"label": "bad token", "csrf": "x" * 43}),
        signed.post(
            "/console/keys",
            data={"label": "elsewhere", "csrf": csrf},
            headers={"origin": "https://evil.example"},
        ),
        signed.post("/console/models/echo/run", json={"input": {"text": "x"}}),
        signed.post(
            "/console/models/echo/run",
            json={"input": {"text": "x"}},
            headers={"x-csrf-token": csrf, "origin": "http://evil.example"},
        ),
        signed.post("/console/logout", data={"csrf": ""}),
    ]
    assert [a.status_code for a in attempts] == [403] * len(attempts)
    assert server.with_database(lambda db: _key_rows(db, key)) == before
    assert signed.get("/console/predictions").status_code == 200  # still signed in: logout was refused

    made = signed.post(
        "/console/keys", data={"label": "ok", "csrf": csrf}, headers={"origin": server.base_url}
    )
    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    secret = re.search(r'id="new-key" value="([^"]+)"', made.text)
    assert secret is not None
    assert len(server.with_database(lambda db: _key_rows(db, key))) == len(before) + 1

    out = signed.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert signed.get("/console/predictions").headers["location"].startswith("/console/login")
    assert signed.get("/v1/account").status_code == 401


def test_a_cross_origin_sign_in_is_refused(server: Server, key: str) -> None:
    with console(server) as client:
        answer = client.post("/console/login", data={"key": key}, headers={"origin": "https://evil.example"})
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize(
    ("target", "landing"),
    [
        ("/console/keys", "/console/keys"),
        ("https://evil.example/", "/console/predictions"),
        ("//evil.example/console/", "/console/predictions"),
        ("/console//evil.example", "/console/predictions"),
        ("/v1/account", "/console/predictions"),
    ],
)
def test_sign_in_redirects_only_within_the_console(
    server: Server, key: str, target: str, landing: str
) -> None:
    with console(server) as client:
        answer = client.post("/console/login", data={"key": key, "next": target})
    assert answer.headers["location"] == landing


def test_pages_forbid_framing_inline_scripts_and_caching(server: Server, signed: httpx.Client) -> None:
    for path in [
        "/console/login",
        "/console/predictions",
        "/console/keys",
        "/console/credits",
        "/console/models",
    ]:
        answer = signed.get(path)
        assert answer.status_code == 200, path
        csp = answer.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["cache-control"] == "no-store"
        assert "<script>" not in answer.text  # the one script is a file
    assert signed.get("/console/static/console.js").headers["content-type"].startswith("text/javascript")
    assert signed.get("/console/static/../app.py").status_code == 404
    assert signed.get("/console/static/nope.js").status_code == 404


def test_a_key_revoked_elsewhere_ends_its_sessions(server: Server, key: str, signed: httpx.Client) -> None:
    assert signed.get("/console/keys").status_code == 200
    server.with_database(lambda db: revoke_key_of(db, key))
    assert signed.get("/console/keys").headers["location"] == "/console/login?next=%2Fconsole%2Fkeys"
    assert signed.get("/v1/account").status_code == 401


def test_a_suspended_account_is_told_so(server: Server, key: str, signed: httpx.Client) -> None:
    server.with_database(lambda db: _set_status(db, key, AccountStatus.SUSPENDED))
    try:
        page = signed.get("/console/predictions")
        assert page.status_code == 401
        assert "ACCOUNT_SUSPENDED" in page.text
        assert signed.get("/v1/account").json()["error_id"] == "ACCOUNT_SUSPENDED"
    finally:
        server.with_database(lambda db: _set_status(db, key, AccountStatus.ACTIVE))
    assert signed.get("/console/predictions").status_code == 200


def test_another_accounts_prediction_and_keys_are_out_of_reach(server: Server, signed: httpx.Client) -> None:
    other = server.key("neighbour")
    with server.client(other) as neighbour:
        theirs = neighbour.post("/v1/predictions", json={"model": "echo", "input": {"text": "mine"}}).json()
    page = signed.get(f"/console/predictions/{theirs['id']}")
    assert page.status_code == 404
    assert "PREDICTION_NOT_FOUND" in page.text
    assert "mine" not in page.text
    assert theirs["id"] not in signed.get("/console/predictions").text

    found = server.with_database(lambda db: _key_rows(db, other))
    assert found == [(other[:10], False)]
    store_id = server.with_database(lambda db: _key_id(db, other))
    csrf = csrf_of(signed)
    refused = signed.post(f"/console/keys/{store_id}/revoke", data={"csrf": csrf})
    assert refused.status_code == 404
    with server.client(other) as neighbour:
        assert neighbour.get("/v1/account").status_code == 200


async def _key_id(db: Database, key: str) -> str:
    found = await db.accounts.find_key(keys.digest(key))
    assert found is not None
    return found[0].id


def test_bad_filters_are_explained_on_the_page(signed: httpx.Client) -> None:
    page = signed.get("/console/predictions", params={"from": "yesterday"})
    assert page.status_code == 200
    assert "must be an ISO 8601 date" in page.text
    page = signed.get("/console/predictions", params={"from": "2026-02-02", "to": "2026-02-01"})
    assert "is after" in page.text
    page = signed.get("/console/predictions", params={"status": "<b>odd</b>"})
    assert "Unknown status &#39;&lt;b&gt;odd&lt;/b&gt;&#39;" in page.text


def test_the_playground_reports_what_the_api_would(signed: httpx.Client) -> None:
    csrf = csrf_of(signed, "/console/models/sleep")
    bad = signed.post("/console/models/sleep/run", json={"input": {"ms": -1}}, headers={"x-csrf-token": csrf})
    assert bad.status_code == 400
    assert bad.json()["error_id"] == "INVALID_INPUT"
    missing = signed.post("/console/models/nope/run", json={"input": {}}, headers={"x-csrf-token": csrf})
    assert missing.status_code == 404
    assert missing.json()["error_id"] == "MODEL_NOT_FOUND"
    assert signed.get("/console/models/nope").status_code == 404


def test_predictions_are_paged_newest_first_keeping_the_filters(server: Server) -> None:
    key = server.key("pager-co")
    with server.client(key) as client:
        made = [
            client.post("/v1/predictions", json={"model": "echo", "input": {"text": str(i)}}).json()["id"]
            for i in range(23)
        ]
        client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 1}})
    signed = sign_in(server, key)
    try:
        first = signed.get("/console/predictions", params={"model": "echo"})
        second = signed.get("/console/predictions", params={"model": "echo", "page": "2"})
    finally:
        signed.close()
    assert re.findall(r'<tr data-id="([^"]+)">', first.text) == made[::-1][:20]
    assert "Page 1 of 2 · 23 predictions" in first.text
    assert 'href="?model=echo&amp;page=2" id="next-page"' in first.text
    assert 'id="prev-page"' not in first.text
    assert re.findall(r'<tr data-id="([^"]+)">', second.text) == made[::-1][20:]
    assert 'href="?model=echo&amp;page=1" id="prev-page"' in second.text
    assert 'id="next-page"' not in second.text


# -- allowances, bounds and rate limits ----------------------------------------------------------------------

GUARDED_TOML = """
[legal]
trusted_proxies = ["127.0.0.1/32"]

[access]
sign_ins_per_address = 4
sign_ins_per_key = 2

[console]
max_sessions = 30
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """Tight sign-in allowances and session bounds, behind a trusted proxy on 127.0.0.1: each test speaks
    from client addresses of its own through ``X-Forwarded-For``."""
    srv = Server(
        workdir=tmp_path_factory.mktemp("guarded"), config=FIXTURE_MODELS_TOML + GUARDED_TOML, backend=backend
    )
    srv.start()
    yield srv
    srv.destroy()


def from_address(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address}


def sign_in_from(server: Server, key: str, address: str) -> httpx.Client:
    client = console(server)
    answer = client.post("/console/login", data={"key": key}, headers=from_address(address))
    assert answer.status_code == 303, answer.text
    return client


async def _more_keys(db: Database, account: str, count: int) -> list[str]:
    owner = await db.accounts.get_account_by_name(account) or await db.accounts.create_account(account)
    minted = [keys.generate_key() for _ in range(count)]
    for new in minted:
        await db.accounts.create_key(owner.id, new.digest, new.prefix, "test")
    return [new.secret for new in minted]


def test_sign_in_attempts_are_throttled_per_client_address(guarded: Server) -> None:
    key = guarded.key()
    guesser = from_address("203.0.113.7")
    with console(guarded) as client:
        tries = [
            client.post("/console/login", data={"key": keys.generate_key().secret}, headers=guesser)
            for _ in range(4)
        ]
        assert [t.status_code for t in tries] == [401] * 4
        # Beyond the allowance even the right key is refused, before it is looked at: nothing is learnt.
        refused = client.post("/console/login", data={"key": key}, headers=guesser)
        assert refused.status_code == 429
        assert re.search(
            r'id="login-error">Too many sign-in attempts from your address; retry in \d+ s\.<', refused.text
        )
        assert 1 <= int(refused.headers["retry-after"]) <= 15  # one more every 60 / 4 s
        assert "set-cookie" not in refused.headers
        assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]
        elsewhere = client.post("/console/login", data={"key": key}, headers=from_address("203.0.113.8"))
        assert elsewhere.status_code == 303
    refusals = [line for line in guarded.log().splitlines() if "console sign-in refused" in line]
    assert len(refusals) == 4
    assert all("203.0.113.7" in line for line in refusals)


def test_sign_in_attempts_are_throttled_per_presented_key(guarded: Server) -> None:
    key, other = guarded.with_database(lambda db: _more_keys(db, f"keyed-{uuid.uuid4().hex[:6]}", 2))
    with console(guarded) as client:
        for n in range(2):
            answer = client.post("/console/login", data={"key": key}, headers=from_address(f"198.51.100.{n}"))
            assert answer.status_code == 303
        refused = client.post("/console/login", data={"key": key}, headers=from_address("198.51.100.9"))
        assert refused.status_code == 429
        assert "Too many sign-in attempts with this key; retry in" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 30  # one more every 60 / 2 s
        assert "set-cookie" not in refused.headers
        # The account's other key, from that very address, is another key.
        assert (
            client.post(
                "/console/login", data={"key": other}, headers=from_address("198.51.100.9")
            ).status_code
            == 303
        )


def test_an_account_keeps_its_newest_sessions_and_cannot_sign_others_out(guarded: Server) -> None:
    bystander = sign_in_from(guarded, guarded.key(), "192.0.2.250")
    account = f"flood-{uuid.uuid4().hex[:6]}"
    secrets = guarded.with_database(lambda db: _more_keys(db, account, 40))
    opened = [sign_in_from(guarded, secret, f"192.0.2.{n}") for n, secret in enumerate(secrets[:21])]
    try:
        # The 21st session ended the account's oldest; the 20 newest live.
        assert opened[0].get("/console/keys").headers["location"].startswith("/console/login")
        assert all(client.get("/console/keys").status_code == 200 for client in opened[1:])
        # 40 sign-ins of one account, more than the deployment's 30 sessions: the others' survive.
        for n, secret in enumerate(secrets[21:]):
            sign_in_from(guarded, secret, f"192.0.2.{100 + n}").close()
        assert bystander.get("/console/keys").status_code == 200
    finally:
        for client in [bystander, *opened]:
            client.close()


async def _tight_account(db: Database, name: str) -> None:
    await db.accounts.put_plan(Plan("tight", rate_limit=3, rate_window_s=60))
    await db.accounts.create_account(name, plan="tight")


def test_console_pages_count_against_the_plans_rate_limit(guarded: Server) -> None:
    account = f"tight-{uuid.uuid4().hex[:6]}"
    guarded.with_database(lambda db: _tight_account(db, account))
    client = sign_in_from(guarded, guarded.key(account), "192.0.2.200")  # a sign-in is not a request
    try:
        pages = [client.get(path) for path in ("/console/predictions", "/console/keys", "/console/credits")]
        assert [p.status_code for p in pages] == [200, 200, 200]
        assert [p.headers["ratelimit-remaining"] for p in pages] == ["2", "1", "0"]
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', pages[0].text)
        assert csrf is not None
        over = client.get("/console/models")
        assert over.status_code == 429
        assert "RATE_LIMIT_EXCEEDED" in over.text
        assert "More than 3 requests in 60 s" in over.text
        assert int(over.headers["retry-after"]) >= 1
        assert over.headers["cache-control"] == "no-store"
        posted = client.post("/console/keys", data={"label": "over", "csrf": csrf.group(1)})
        assert posted.status_code == 429
        assert 'id="new-key"' not in posted.text
        run = client.post(
            "/console/models/echo/run", json={"input": {"text": "x"}}, headers={"x-csrf-token": csrf.group(1)}
        )
        assert run.status_code == 429
        assert run.json()["error_id"] == "RATE_LIMIT_EXCEEDED"
        # Signing out is never refused.
        assert client.post("/console/logout", data={"csrf": csrf.group(1)}).status_code == 303
    finally:
        client.close()


# -- the session stores, against each other ------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def session_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """Both stores with the same bounds: two sessions an account, three in all."""
    if request.param == "memory":
        yield ConsoleSessions(per_account=2, max_sessions=3)
        return
    redis = connect(REDIS_URL)
    prefix = RedisKeys(f"t{uuid.uuid4().hex[:12]}")
    yield RedisConsoleSessions(redis, prefix, per_account=2, max_sessions=3)
    stale = [k async for k in redis.scan_iter(match=f"{prefix.prefix}:*")]
    if stale:
        await redis.delete(*stale)
    await redis.aclose()


def _principal(account: str, key_id: str) -> Principal:
    return Principal(Account(account, account, AccountStatus.ACTIVE, utcnow()), key_id=key_id)


async def test_both_session_stores_bound_sessions_per_account_and_in_all(session_store: SessionStore) -> None:
    async def live(tokens: list[str]) -> list[bool]:
        return [await session_store.get(t) is not None for t in tokens]

    a = [(await session_store.open(_principal("acc_a", "key_a"), "a" * 64))[0] for _ in range(3)]
    assert await live(a) == [False, True, True]  # a third session of one account ends its oldest
    b, _ = await session_store.open(_principal("acc_b", "key_b"), "b" * 64)
    assert await live([*a, b]) == [False, True, True, True]
    c, _ = await session_store.open(_principal("acc_c", "key_c"), "c" * 64)
    assert await live([*a, b, c]) == [False, False, True, True, True]  # a fourth in all ends the oldest

    await session_store.close(b)  # a closed session makes room: nobody else is ended for the next one
    d, _ = await session_store.open(_principal("acc_d", "key_d"), "d" * 64)
    assert await live([a[2], b, c, d]) == [True, False, True, True]
    assert await session_store.close_key("key_a") == 1
    e = [(await session_store.open(_principal("acc_e", "key_e"), "e" * 64))[0] for _ in range(2)]
    assert await live([a[2], c, d, *e]) == [False, False, True, True, True]
    # The account whose session the global bound ended keeps counting only its live ones.
    f = [(await session_store.open(_principal("acc_c", "key_c2"), "f" * 64))[0] for _ in range(2)]
    assert await live([d, *e, *f]) == [False, False, True, True, True]


# -- cancel, copy, code --------------------------------------------------------------------------------------


def _page_csrf(page: httpx.Response) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found is not None
    return found.group(1)


def test_the_cancel_button_cancels_a_running_prediction(
    server: Server, key: str, signed: httpx.Client
) -> None:
    with server.client(key) as api:
        running = api.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 30000}}).json()
        done = api.post(
            "/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "await": True}
        ).json()
    path = f"/console/predictions/{running['id']}"
    page = signed.get(path)
    assert 'id="cancel-form"' in page.text
    assert f'action="{path}/cancel"' in page.text
    csrf = _page_csrf(page)
    assert signed.post(f"{path}/cancel", data={"csrf": "x" * 43}).status_code == 403
    assert (
        signed.post(
            f"{path}/cancel", data={"csrf": csrf}, headers={"origin": "https://evil.example"}
        ).status_code
        == 403
    )
    with server.client(key) as api:
        assert api.get(f"/v1/predictions/{running['id']}").json()["status"] in ("pending", "processing")

    cancelled = signed.post(f"{path}/cancel", data={"csrf": csrf})
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == path
    with server.client(key) as api:
        assert api.get(f"/v1/predictions/{running['id']}").json()["status"] == "cancelled"
    after = signed.get(path)
    assert 'id="status">cancelled<' in after.text
    assert 'id="cancel-form"' not in after.text

    finished = signed.get(f"/console/predictions/{done['id']}")
    assert 'id="cancel-form"' not in finished.text
    again = signed.post(f"/console/predictions/{done['id']}/cancel", data={"csrf": csrf})
    assert again.status_code == 409
    assert "PREDICTION_NOT_CANCELLABLE" in again.text


def test_run_again_resubmits_the_same_model_and_input(server: Server, key: str, signed: httpx.Client) -> None:
    with server.client(key) as api:
        failed = api.post(
            "/v1/predictions", json={"model": "raises", "input": {"kind": "pose"}, "await": True}
        ).json()
    assert (failed["status"], failed["input"]) == ("failed", {"kind": "pose"})
    path = f"/console/predictions/{failed['id']}"
    page = signed.get(path)
    assert 'id="rerun-form"' in page.text
    assert f'action="{path}/rerun"' in page.text
    csrf = _page_csrf(page)
    assert signed.post(f"{path}/rerun", data={"csrf": "x" * 43}).status_code == 403
    cross = signed.post(f"{path}/rerun", data={"csrf": csrf}, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403

    rerun = signed.post(f"{path}/rerun", data={"csrf": csrf})
    assert rerun.status_code == 303, rerun.text
    new_path = rerun.headers["location"]
    new_id = new_path.removeprefix("/console/predictions/")
    assert new_path.startswith("/console/predictions/")
    assert new_id != failed["id"]
    with server.client(key) as api:
        again = wait_for_terminal(api, new_id)
        listed = [p["id"] for p in api.get("/v1/predictions?per_page=50").json()["data"]]
    assert (again["model"], again["input"], again["source"]) == ("raises", {"kind": "pose"}, "console")
    assert (again["status"], again["error_name"]) == ("failed", "PoseError")
    assert listed.count(new_id) == 1
    assert listed.count(failed["id"]) == 1
    assert 'id="error-name">PoseError<' in signed.get(new_path).text

    with server.client(key) as api:
        done = api.post("/v1/predictions", json={"model": "echo", "input": {"text": "twice"}, "await": True})
        done_id = done.json()["id"]
        second = signed.post(f"/console/predictions/{done_id}/rerun", data={"csrf": csrf})
        assert second.status_code == 303
        echoed = wait_for_terminal(api, second.headers["location"].removeprefix("/console/predictions/"))
        assert (echoed["status"], echoed["output"]) == ("succeeded", "twice")

        assert api.delete(f"/v1/predictions/{done_id}").json()["data_removed"] is True
    removed = signed.get(f"/console/predictions/{done_id}")
    assert 'id="rerun-form"' not in removed.text
    refused = signed.post(f"/console/predictions/{done_id}/rerun", data={"csrf": csrf})
    assert refused.status_code == 422
    assert "UNPROCESSABLE_ENTITY" in refused.text
    assert "its input was removed" in refused.text

    stranger = sign_in(server, server.key())
    try:
        theirs = stranger.post(f"{path}/rerun", data={"csrf": csrf_of(stranger)})
    finally:
        stranger.close()
    assert theirs.status_code == 404
    assert "PREDICTION_NOT_FOUND" in theirs.text


def wait_for_terminal(api: httpx.Client, prediction_id: str) -> dict[str, object]:
    for _ in range(600):
        body: dict[str, object] = api.get(f"/v1/predictions/{prediction_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not end")


def _snippets_of(page: str) -> dict[str, str]:
    return {
        language: html.unescape(code)
        for language, code in re.findall(r'<pre class="code" id="code-([a-z]+)">(.*?)</pre>', page, re.S)
    }


def test_the_code_shown_with_a_run_runs_it_again_without_the_key(
    server: Server, key: str, signed: httpx.Client
) -> None:
    text = 'it\'s "quoted" $HOME `date` \\ ünïcode'
    csrf = csrf_of(signed, "/console/models/echo")
    run = signed.post(
        "/console/models/echo/run", json={"input": {"text": text}}, headers={"x-csrf-token": csrf}
    )
    assert run.status_code == 201
    shown = {s["language"]: s["code"] for s in run.json()["snippets"]}
    page = signed.get(f"/console/predictions/{run.json()['id']}")
    assert _snippets_of(page.text) == shown
    assert set(shown) == {"curl", "python", "javascript"}
    assert "predictd.Client(" in shown["python"]
    assert "fetch(" in shown["javascript"]
    assert key not in page.text

    env = {**os.environ, "PREDICTD_API_KEY": key}
    commands = {
        "curl": ["bash", "-c", shown["curl"]],
        "python": [sys.executable, "-c", shown["python"]],
        "javascript": ["node", "--input-type=module", "-e", shown["javascript"]],
    }
    for language, command in commands.items():
        assert "PREDICTD_API_KEY" in shown[language]
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert ran.returncode == 0, (language, ran.stderr)
        if language == "python":
            assert ran.stdout == f"{text}\n"
        elif language == "curl":
            answer = orjson.loads(ran.stdout)
            assert (answer["model"], answer["input"], answer["output"]) == ("echo", {"text": text}, text)
        else:
            assert "status: 'succeeded'" in ran.stdout, ran.stdout
    with server.client(key) as api:
        listed = api.get("/v1/predictions", params={"model": "echo"}).json()["data"]
    assert (
        sum(1 for p in listed if p["input"] == {"text": text}) == 4
    )  # the console's run, then each snippet's
