"""Edge values at the HTTP edge (issue #22, items 6-8), on both backends alike."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from predictd.errors import ErrorId

from ..conftest import FIXTURE_MODELS_TOML, Server
from .test_fashn_api import assert_fashn_error
from .test_native_api import assert_error

ADMIN_KEY = "adm_edge_values_suite_0a1b2c3d4e5f60718293"
CONFIG = f"""
admin_key = "{ADMIN_KEY}"
{FIXTURE_MODELS_TOML}
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
