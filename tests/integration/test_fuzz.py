"""Schemathesis against predictd's own ``/openapi.json`` on a live server, both surfaces.

Every operation of the Skytells ("native") surface, the FASHN surface and the account routes is fuzzed with
generated valid and invalid requests (schemathesis' examples, coverage and fuzzing phases), authenticated
with a real key. Each answer must conform to the document (status documented, content type, schema), no
answer may be a 5xx, and every error body must be the documented one of its surface: the catalog's flat and
nested ids on the native surface, ``{error, message, retryable, request_id}`` (never ``id`` / ``status``)
on the FASHN paths. The status codes reached per operation are collected, printed, and checked at the end.

Bounded: at most ``MAX_EXAMPLES`` (25) generated cases per operation plus schemathesis' explicit examples
and coverage cases, on one server on 127.0.0.1; the fuzzing must end within ``BUDGET_S`` (90 s).
``scripts/fuzz-long`` runs the same module with many more examples (``PREDICTD_FUZZ_EXAMPLES``).

Two schemathesis checks are excluded, each for a documented reason:

* ``positive_data_acceptance``: a submit's ``input`` is checked against the chosen model's own
  ``input_schema`` (published at ``GET /v1/models``), which one request body schema cannot express, so a
  body valid for the document may be refused with ``INVALID_INPUT`` by design.
* ``unsupported_method``: an undocumented method on a known path answers the catalog's ``NOT_FOUND`` (404,
  "No route METHOD PATH"), as every unknown route does; the contract has no 405 error.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance, unsupported_method

from predictd.api.app import create_app
from predictd.api.fashn import serves as fashn_serves
from predictd.config.settings import Settings
from predictd.deploy.start import start_deployment
from predictd.errors import API_ERRORS, FASHN_STATUS

from ..conftest import Server
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

MAX_EXAMPLES = int(os.environ.get("PREDICTD_FUZZ_EXAMPLES", "25"))
# The suite's run uses a fixed seed per operation, so CI sees the same examples every time and coverage
# cannot flake; scripts/fuzz-long (which sets PREDICTD_FUZZ_EXAMPLES) explores randomly.
DERANDOMIZE = "PREDICTD_FUZZ_EXAMPLES" not in os.environ
BUDGET_S = float(os.environ.get("PREDICTD_FUZZ_BUDGET_S", "90"))
EXCLUDED_CHECKS = [positive_data_acceptance, unsupported_method]
# Operator endpoints take the deployment's admin key, not an account's; they are not an API surface.
EXCLUDED_PATHS = r"^/admin/"

FUZZ_TOML = """
await_timeout_s = 0.5
shutdown_grace_s = 0
"""


@dataclass
class Target:
    server: Server
    key: str
    session: requests.Session
    # Real ids to put in path parameters now and then, so operations reach past PREDICTION_NOT_FOUND.
    finished_ids: list[str]
    open_ids: list[str]  # queued or running: each can be cancelled once, on either surface
    reached: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    started: float = field(default_factory=time.monotonic)  # once the server is up and seeded


def _finished(client: httpx.Client, prediction_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if client.get(f"/v1/predictions/{prediction_id}").json()["status"] in {"succeeded", "failed"}:
            return
        time.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not finish")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Target]:
    server = Server(workdir=tmp_path_factory.mktemp("fuzz"), config=FUZZ_TOML, backend=backend).start()
    key = server.key("fuzz")
    with server.client(key) as client:
        native = client.post(
            "/v1/predictions", json={"model": "echo", "input": {"text": "hi"}, "await": True}
        )
        assert native.status_code == 201, native.text
        fashn = client.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "hi"}})
        assert fashn.status_code == 200, fashn.text
        open_ids = []
        for _ in range(4):
            running = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 600_000}})
            assert running.status_code == 201, running.text
            open_ids.append(running.json()["id"])
        _finished(client, fashn.json()["id"])
    session = requests.Session()
    target = Target(server, key, session, [native.json()["id"], fashn.json()["id"]], open_ids)
    yield target
    session.close()
    server.destroy()


# The document the server publishes, built by the same code at collection time (schemathesis parametrizes
# one test per operation from it then); the first test checks the live server serves exactly this one.
OPENAPI = create_app(Settings(builtin_models=False), start_deployment).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI).exclude(path_regex=EXCLUDED_PATHS)


def test_the_live_server_publishes_the_fuzzed_document(target: Target) -> None:
    response = httpx.get(f"{target.server.base_url}/openapi.json")
    assert response.status_code == 200
    assert response.json() == OPENAPI


def _pick(value: str, choices: list[str]) -> str:
    """A real value instead of the generated one for about half of the cases, chosen by the generated value
    itself so that Hypothesis can replay and shrink a failure."""
    slot = zlib.crc32(value.encode("utf-8", "surrogatepass")) % (2 * len(choices))
    return choices[slot] if slot < len(choices) else value


MODELS = ["echo", "sleep"]
# Webhook URLs the fuzzer makes up are replaced by this one before the request is sent, in every mode: a
# loopback address the server's outbound guard refuses, so no delivery ever leaves the machine (or starts).
WEBHOOK_SINK = "http://127.0.0.1:9/fuzz-webhook"


def _keep_webhooks_local(case: schemathesis.Case) -> None:
    if isinstance(case.body, dict) and isinstance(case.body.get("webhook"), dict):
        hook = case.body["webhook"]
        if isinstance(hook.get("url"), str) and len(hook["url"]) <= 2048:
            hook["url"] = WEBHOOK_SINK
    if (
        case.query
        and isinstance(case.query.get("webhook_url"), str)
        and len(case.query["webhook_url"]) <= 2048
    ):
        case.query["webhook_url"] = WEBHOOK_SINK


def _use_real_ids(case: schemathesis.Case, target: Target) -> None:
    if case.meta is None or case.meta.generation.mode.is_negative:
        return
    if isinstance(case.body, dict):
        for name in ("model", "model_name"):
            if isinstance(case.body.get(name), str):
                case.body[name] = _pick(case.body[name], MODELS)
    params = case.path_parameters
    if not params:
        return
    if isinstance(params.get("prediction_id"), str):
        ids = list(target.finished_ids)
        if not case.path.endswith("/stream"):  # a stream of an open prediction lasts as long as it does
            ids.extend(target.open_ids)
        params["prediction_id"] = _pick(params["prediction_id"], ids)
    if isinstance(params.get("slug"), str):
        params["slug"] = _pick(params["slug"], MODELS)


def _as_httpx(response: schemathesis.Response) -> httpx.Response:
    headers = [(name, value) for name, values in response.headers.items() for value in values]
    return httpx.Response(response.status_code, headers=headers, content=response.content)


def assert_documented_error_body(path: str, response: httpx.Response) -> None:
    """An error answer in its surface's documented shape, with the catalog's status for its id / name."""
    body = response.json()
    if fashn_serves(path):
        assert set(body) == {"error", "message", "retryable", "request_id"}, body
        assert body["error"] in FASHN_STATUS, body
        candidates = [
            spec
            for spec in API_ERRORS.values()
            if spec.fashn_name == body["error"] and spec.retryable is body["retryable"]
        ]
        assert candidates, f"no catalog error is {body['error']} with retryable={body['retryable']}"
        assert_fashn_error(response, candidates[0].error_id)
        assert body["request_id"] == response.headers["x-request-id"]
        assert response.headers["x-should-retry"] == ("true" if body["retryable"] else "false")
        return
    assert set(body) == {"error_id", "message", "retryable", "request_id", "error"}, body
    assert set(body["error"]) == {"error_id", "message", "details", "http_status", "retryable"}, body
    matches = [
        spec
        for spec in API_ERRORS.values()
        if spec.wire_error_id.value == body["error_id"] and spec.http_status == response.status_code
    ]
    assert matches, f"{body['error_id']} is not a catalog error answered with {response.status_code}"
    assert_error(response, matches[0].error_id)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_every_operation_conforms_to_the_openapi_document(case: schemathesis.Case, target: Target) -> None:
    _keep_webhooks_local(case)
    _use_real_ids(case, target)
    headers = {"x-api-key": target.key}
    response = case.call(base_url=target.server.base_url, session=target.session, headers=headers, timeout=20)
    target.reached[f"{case.method.upper()} {case.path}"].add(response.status_code)
    assert response.status_code < 500, f"{response.status_code}: {response.content[:500]!r}"
    case.validate_response(response, headers=headers, excluded_checks=EXCLUDED_CHECKS)
    if response.status_code >= 400:
        assert_documented_error_body(urlsplit(str(response.request.url)).path, _as_httpx(response))


PUBLIC_PATHS = {"/health", "/v1/outputs/{name}", "/openapi.json"}


def test_reached_status_codes_are_documented_and_cover_the_catalog(target: Target) -> None:
    """Runs after the fuzzing above (same module, file order): what it reached, per operation; first, every
    operation that needs a key is called once with a wrong one (the fuzzer always sends the right key)."""
    assert target.reached, "run this module as a whole: the fuzzing test above collects what it reached"
    documented: dict[str, set[int]] = {}
    with target.server.client("pd_not_a_key") as stranger:
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            documented[label] = {
                int(code) for code in operation.definition.raw["responses"] if code.isdigit()
            }
            if operation.path in PUBLIC_PATHS:
                continue
            path = operation.path.format(prediction_id=target.finished_ids[0], slug="echo")
            response = stranger.request(operation.method.upper(), path, json={})
            assert_documented_error_body(path, response)
            assert response.json()["error" if fashn_serves(path) else "error_id"] in {
                "UnauthorizedAccess",
                "UNAUTHORIZED",
            }
            target.reached[label].add(response.status_code)
    # A documented refusal the seeded examples do not happen to produce is probed once on purpose, so that
    # "reachable" does not depend on the generator's luck: a use case the model does not declare is 422.
    with target.server.client(target.key) as account:
        path = "/v1/predictions"
        unsupported = {"model": "echo", "input": {"text": "x"}, "use_case": "not-declared"}
        response = account.post(path, json=unsupported)
        assert response.status_code == 422, response.text
        assert_documented_error_body(path, response)
        target.reached[f"POST {path}"].add(response.status_code)
    lines = []
    for label in sorted(documented):
        reached = target.reached.get(label, set())
        assert reached, f"{label} was never called"
        assert reached <= documented[label], f"{label}: reached {reached}, documents {documented[label]}"
        lines.append(f"{label}: reached {sorted(reached)} of documented {sorted(documented[label])}")
    # The coverage phase also sends methods a path does not document: each is an unknown route, NOT_FOUND.
    other_methods = {label: codes for label, codes in target.reached.items() if label not in documented}
    assert all(codes == {404} for codes in other_methods.values()), other_methods
    everything = set().union(*target.reached.values())
    elapsed = time.monotonic() - target.started
    print(
        f"\nstatus codes reached by schemathesis ({MAX_EXAMPLES} examples per operation, {elapsed:.1f} s):\n"
        + "\n".join(lines)
        + f"\n{len(other_methods)} undocumented method/path pairs: 404\nall: {sorted(everything)}"
    )
    assert not any(code >= 500 for code in everything)
    # The fuzzer got past validation to real work (2xx) and met each kind of refusal the document lists
    # for these operations with an account in good standing.
    assert {200, 201, 400, 401, 404, 409, 422} <= everything, everything
    assert elapsed < BUDGET_S
