"""Security properties over real HTTP against a live server, every route taken from its own /openapi.json:
tenant isolation on every route that takes a prediction id, API keys stored only as digests, revocation
effective on the very next request, admin routes closed to account keys, and no secret or traceback in any
answer (nor any secret in the server log, even after INTERNAL_ERRORs from a locked database).

Log policy, checked here: an INTERNAL_ERROR's traceback goes to the server log (the operator needs it; the
log line carries the request id quoted in the answer), never to an answer; neither the log nor any answer
carries an API key, the admin key or a webhook secret (SQL parameters are left out of database errors). The
one deliberate exception is the first start's bootstrap key, printed once on the server's stdout for the
operator to copy; it appears only on those lines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from predictd.api.fashn import serves as fashn_serves
from predictd.core import keys
from predictd.errors import ErrorId

from ..conftest import ROOT, Server
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

ADMIN_KEY = "adm_security_suite_9f8e7d6c5b4a39281706"
CONFIG = f"""
admin_key = "{ADMIN_KEY}"
builtin_models = ["echo", "sleep"]
sqlite_busy_timeout_ms = 300
postgres_lock_timeout_ms = 300
shutdown_grace_s = 0
"""
ALLOWED_SECRET_ROUTES = {  # the routes whose purpose is to hand a secret to its owner
    ("GET", "/v1/webhooks/secret"),
    ("POST", "/v1/webhooks/secret/rotate"),
    ("POST", "/admin/v1/accounts/{name}/keys"),
}


@dataclass
class Tenant:
    name: str
    key: str
    key_id: str
    done: str = ""  # a succeeded prediction
    running: str = ""  # a prediction still running


@dataclass
class Suite:
    server: Server
    a: Tenant
    b: Tenant
    bootstrap_key: str
    secrets: set[str] = field(default_factory=set)
    answers: list[tuple[str, str, httpx.Response]] = field(default_factory=list)  # every answer seen

    def http(self, headers: dict[str, str] | None = None) -> httpx.Client:
        def record(response: httpx.Response) -> None:
            response.read()
            route = response.request.extensions.get("route", response.request.url.path)
            self.answers.append((response.request.method, str(route), response))

        return httpx.Client(
            base_url=self.server.base_url,
            headers=headers or {},
            timeout=15,
            event_hooks={"response": [record]},
        )

    def admin(
        self, method: str, path: str, body: dict[str, Any] | None = None, template: str | None = None
    ) -> dict[str, Any]:
        route = f"/admin/v1{template or path}"
        with self.http({"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            response = c.request(method, f"/admin/v1{path}", json=body or {}, extensions={"route": route})
        assert response.status_code in (200, 201), response.text
        return dict(response.json())

    def tenant(self, name: str) -> Tenant:
        self.admin("POST", "/accounts", {"name": name})
        issued = self.admin(
            "POST", f"/accounts/{name}/keys", {"label": "security"}, template="/accounts/{name}/keys"
        )
        self.secrets.add(issued["key"])
        return Tenant(name, issued["key"], issued["id"])


def bootstrap_key(server: Server) -> str:
    line = next(line for line in server.log().splitlines() if "API key for account 'default'" in line)
    return line.rsplit(" ", 1)[-1]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Suite]:
    server = Server(workdir=tmp_path_factory.mktemp("security"), config=CONFIG, backend=backend).start()
    try:
        placeholder = Tenant("", "", "")
        s = Suite(server, placeholder, placeholder, bootstrap_key(server))
        s.secrets |= {ADMIN_KEY, s.bootstrap_key}
        s.a, s.b = s.tenant("tenant-a"), s.tenant("tenant-b")
        for tenant in (s.a, s.b):
            with s.http({"x-api-key": tenant.key}) as c:
                done = c.post(
                    "/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "await": True}
                )
                tenant.done = done.json()["id"]
                tenant.running = c.post(
                    "/v1/predictions", json={"model": "sleep", "input": {"ms": 60_000}}
                ).json()["id"]
                s.secrets |= set(c.get("/v1/webhooks/secret").json()["valid_secrets"])
        yield s
    finally:
        server.destroy()


def schema_routes(suite: Suite) -> list[tuple[str, str, list[str]]]:
    """(method, path template, path parameter names) of every route in the server's own OpenAPI document."""
    with suite.http() as c:
        document = c.get("/openapi.json").json()
    routes = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            routes.append((method.upper(), path, names))
    return routes


def call(client: httpx.Client, method: str, template: str, values: dict[str, str]) -> httpx.Response:
    path = template.format(**values)
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return client.request(method, path, extensions={"route": template}, **body)


def snapshot(suite: Suite, tenant: Tenant) -> dict[str, Any]:
    """What the owner sees of its predictions and account (timings that advance on their own left out)."""
    with suite.http({"x-api-key": tenant.key}) as c:
        seen: dict[str, Any] = {}
        for prediction_id in (tenant.done, tenant.running):
            body = c.get(f"/v1/predictions/{prediction_id}").json()
            body.pop("metrics", None)
            seen[prediction_id] = body
            seen[f"{prediction_id}/webhooks"] = c.get(f"/v1/predictions/{prediction_id}/webhooks").json()
        seen["account"] = c.get("/v1/account").json()["credits"]
        seen["list"] = sorted(p["id"] for p in c.get("/v1/predictions").json()["data"])
    return seen


# -- tenant isolation ----------------------------------------------------------------------------------------


def test_every_route_taking_a_prediction_id_hides_other_accounts_predictions(suite: Suite) -> None:
    routes = [(m, p) for m, p, names in schema_routes(suite) if "prediction_id" in names]
    assert len(routes) >= 8, routes  # get, cancel, 2 deletes, stream, webhooks, FASHN status and cancel
    before = snapshot(suite, suite.a)
    refused = 0
    with (
        suite.http({"x-api-key": suite.b.key}) as b,
        suite.http({"Authorization": f"Bearer {suite.b.key}"}) as b2,
    ):
        for method, template in routes:
            for client in (b, b2):
                for foreign in (suite.a.done, suite.a.running):
                    response = call(client, method, template, {"prediction_id": foreign})
                    missing = call(
                        client, method, template, {"prediction_id": "01a2doesnotexist000000000000"}
                    )
                    if fashn_serves(template):
                        assert_fashn_error(response, ErrorId.PREDICTION_NOT_FOUND)
                    else:
                        assert_error(response, ErrorId.PREDICTION_NOT_FOUND, foreign)
                    # Exactly what a prediction that does not exist gets: nothing tells the two apart.
                    assert response.status_code == missing.status_code
                    assert response.text.replace(foreign, "ID").replace(
                        response.headers["x-request-id"], "REQ"
                    ) == missing.text.replace("01a2doesnotexist000000000000", "ID").replace(
                        missing.headers["x-request-id"], "REQ"
                    )
                    refused += 1
        listed = b.get("/v1/predictions").json()["data"]
        assert {p["id"] for p in listed} == {suite.b.done, suite.b.running}
    after = snapshot(suite, suite.a)
    print(f"\nisolation: {len(routes)} routes x 2 auth headers x 2 foreign ids = {refused} calls, all 404")
    assert after == before  # nothing changed: not cancelled, not deleted, no webhook, no charge
    assert before[suite.a.running]["status"] in ("starting", "processing", "pending")


# -- keys at rest, revocation, admin routes ----------------------------------------------------------------


def test_keys_are_stored_only_as_digests(suite: Suite) -> None:
    raw = suite.server.database_bytes()  # SQLite's files with its WAL, or all of PostgreSQL's rows
    api_keys = [suite.a.key, suite.b.key, suite.bootstrap_key]
    for secret in api_keys:
        assert secret.encode() not in raw
        assert keys.digest(secret).encode() in raw  # the search does find what is there
    assert ADMIN_KEY.encode() not in raw
    print(f"\nkeys at rest: {len(raw)} bytes of the database searched; 0 plaintext keys")


def predictd_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTD_")}
    return subprocess.run(
        [sys.executable, "-m", "predictd", *server.cli_args(), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_a_revoked_key_is_refused_from_the_next_request_on(suite: Suite) -> None:
    victim = suite.tenant("revoked")
    statuses: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = threading.Event()

    def keep_using() -> None:
        with suite.http({"x-api-key": victim.key}) as c:
            while not stop.is_set() and len(statuses) < 5000:
                sent = time.monotonic()
                status = c.get("/v1/models").status_code
                statuses.append((sent, time.monotonic(), status))

    user = threading.Thread(target=keep_using)
    user.start()
    try:
        deadline = time.monotonic() + 20
        while sum(1 for *_, s in statuses if s == 200) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        predictd_cli(suite.server, "keys", "revoke", victim.key_id)
        revoked_at = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        user.join(timeout=30)
    after = [s for sent, _, s in statuses if sent > revoked_at]
    before = [s for _, answered, s in statuses if answered < revoked_at]
    print(
        f"\nrevocation: {len(before)} requests before the CLI returned ({before.count(200)} ok), "
        f"{len(after)} after it, {after.count(401)} refused"
    )
    assert after
    assert set(after) == {401}
    with suite.http({"Authorization": f"Bearer {victim.key}"}) as c:
        assert_error(c.get("/v1/models"), ErrorId.UNAUTHORIZED, "revoked")
        assert_fashn_error(
            c.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "x"}}), ErrorId.UNAUTHORIZED
        )


def test_admin_routes_refuse_account_keys_and_change_nothing(suite: Suite) -> None:
    routes = [(m, p) for m, p, _ in schema_routes(suite) if p.startswith("/admin/")]
    assert len(routes) >= 10, routes
    values = {"name": suite.a.name, "model": "echo"}
    accounts_before = suite.admin("GET", "/accounts")
    plans_before = suite.admin("GET", "/plans")
    tried = 0
    for headers in (
        {"x-api-key": suite.a.key},
        {"Authorization": f"Bearer {suite.a.key}"},
        {"Authorization": f"Bearer {suite.bootstrap_key}"},
        {},
    ):
        with suite.http(headers) as c:
            for method, template in routes:
                assert_error(call(c, method, template, values), ErrorId.UNAUTHORIZED)
                tried += 1
    print(f"\nadmin: {len(routes)} routes x 4 credentials (3 account keys, none) = {tried} calls, all 401")
    assert suite.admin("GET", "/accounts") == accounts_before
    assert suite.admin("GET", "/plans") == plans_before


# -- no secret, no traceback ---------------------------------------------------------------------------------


def test_no_secret_or_traceback_in_any_answer_or_in_the_log(suite: Suite) -> None:
    own = {"prediction_id": suite.a.done, "slug": "echo", "name": suite.a.name, "model": "echo"}
    routes = [(m, p) for m, p, _ in schema_routes(suite)]
    with (
        suite.http({"x-api-key": suite.a.key}) as a,
        suite.http({"Authorization": f"Bearer {suite.b.key}"}) as b,
        suite.http() as anonymous,
    ):
        for method, template in routes:
            if not template.startswith("/admin/"):
                for client in (a, b, anonymous):
                    call(client, method, template, own)
        # Malformed requests of every kind.
        a.post("/v1/predictions", content=b"{not json", headers={"content-type": "application/json"})
        a.post("/v1/predictions", content=b"x", headers={"content-type": "text/plain"})
        a.post("/v1/predictions", json={"model": "echo", "input": {"text": "x", "extra": 1}})
        a.post("/v1/run", json={"model_name": "nope", "inputs": {}})
        a.get("/v1/predictions", params={"per_page": "0", "from": "yesterday"})
        a.get("/v1/no/such/route")
        anonymous.get("/metrics")  # not in the schema
        # SERVICE_UNAVAILABLEs: writes against a locked database, through each surface and the admin API.
        # A webhook URL often embeds its receiver's token, and inputs are the user's data: neither belongs in
        # the log, where a failed INSERT's parameters would put them.
        hook_token = keys.generate_key().secret.removeprefix("pd_")
        private_text = f"private input {keys.generate_key().secret}"
        suite.secrets |= {hook_token, private_text}
        webhook = {"url": f"https://hooks.example.test/services/T0/B0/{hook_token}"}
        with suite.server.database_write_lock():
            internal = [
                a.post(
                    "/v1/predictions",
                    json={"model": "echo", "input": {"text": private_text}, "webhook": webhook},
                ),
                b.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "locked"}}),
                a.post("/v1/webhooks/secret/rotate"),
                a.post(f"/v1/predictions/{suite.a.running}/cancel"),
            ]
            with suite.http({"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
                internal.append(admin.post(f"/admin/v1/accounts/{suite.a.name}/keys", json={"label": "x"}))
        assert_error(internal[0], ErrorId.SERVICE_UNAVAILABLE, "quote request id")
        assert_fashn_error(internal[1], ErrorId.SERVICE_UNAVAILABLE)
        for response in internal[2:]:
            assert_error(response, ErrorId.SERVICE_UNAVAILABLE, "quote request id")
        # Once the lock is gone the same requests work.
        assert (
            a.post("/v1/predictions", json={"model": "echo", "input": {"text": "unlocked"}}).status_code
            == 201
        )
        rotated = a.post("/v1/webhooks/secret/rotate", extensions={"route": "/v1/webhooks/secret/rotate"})
        assert rotated.status_code == 200
        suite.secrets |= set(rotated.json()["valid_secrets"])

    leaks = []
    for method, route, response in suite.answers:
        text = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
        for marker in ("Traceback", 'File "', "sqlalchemy", "sqlite3.", "asyncpg"):
            if marker in text:
                leaks.append((method, route, response.status_code, marker))
        if (method, route) not in ALLOWED_SECRET_ROUTES:
            leaks.extend(
                (method, route, response.status_code, s[:6] + "…") for s in suite.secrets if s in text
            )
    log = suite.server.log()
    log_lines = [line for line in log.splitlines() if suite.bootstrap_key not in line]
    bootstrap_lines = len(log.splitlines()) - len(log_lines)
    in_log = [s[:6] + "…" for s in suite.secrets if any(s in line for line in log_lines)]
    for response in internal:
        assert f"request_id={response.headers['x-request-id']}" in log
    print(
        f"\nsecrets: {len(suite.answers)} answers from {len(routes)} routes checked for {len(suite.secrets)} "
        f"secrets and tracebacks: {len(leaks)} leaks; log: {len(log.splitlines())} lines, "
        f"{log.count('database busy; answered 503')} contention warnings (with request ids), "
        f"{len(in_log)} secrets; bootstrap key on {bootstrap_lines} startup lines only"
    )
    assert not leaks
    assert not in_log
    assert (
        bootstrap_lines == 2
    )  # "API key for account 'default' …" and the "Try: curl …" line, at first start
    # Contention is logged once per answer, with its reason and request id, and no traceback (no fault).
    assert log.count("database busy; answered 503") >= len(internal)
    assert "Exception in ASGI application" not in log
