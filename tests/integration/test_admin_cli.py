"""The operator's command line against a real server's store: plans, accounts, credits, suspension,
disabled models, keys; each change is seen by the running server at once."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx

from predictd import Client

from ..conftest import ROOT, Server


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "predictd", *server.cli_args(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(server: Server, *args: str) -> str:
    done = cli(server, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_operator_manages_plans_accounts_and_credits_from_the_cli(make_server: Any) -> None:
    server = make_server()
    ok(
        server,
        "plans",
        "set",
        "pro",
        "--models",
        "echo",
        "--rate-limit",
        "100",
        "--concurrency-limit",
        "2",
        "--prepaid",
    )
    assert "pro" in ok(server, "plans", "list")
    ok(server, "accounts", "create", "acme", "--plan", "pro")
    key = ok(server, "keys", "create", "--account", "acme").strip()
    ok(server, "credits", "grant", "acme", "3", "--note", "invoice 42")
    with httpx.Client(base_url=server.base_url, headers={"x-api-key": key}, timeout=30) as c:
        done = c.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}, "await": True}).json()
        assert done["credits_used"] == 1
        assert c.post("/v1/predictions", json={"model": "sleep", "input": {}}).json()["error_id"] == (
            "MODEL_ACCESS_DENIED"
        )
        shown = ok(server, "credits", "show", "acme")
        assert "'balance': 2.0" in shown
        assert "invoice 42" in shown
        assert "charge" in shown

        ok(server, "credits", "adjust", "acme", "-5", "--note", "chargeback")
        assert c.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}}).json()[
            "error_id"
        ] == ("PAYMENT_REQUIRED")
        ok(server, "credits", "grant", "acme", "10")

        ok(server, "accounts", "disable-model", "acme", "echo")
        assert c.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}}).json()[
            "error_id"
        ] == ("MODEL_NOT_AUTHORIZED")
        ok(server, "accounts", "enable-model", "acme", "echo")

        ok(server, "accounts", "suspend", "acme", "--reason", "audit")
        assert c.get("/v1/models").json()["error_id"] == "ACCOUNT_SUSPENDED"
        ok(server, "accounts", "unsuspend", "acme")
        assert c.get("/v1/models").status_code == 200
    listing = ok(server, "accounts", "list")
    assert "acme" in listing
    assert "pro" in listing


def test_cli_errors_are_named_and_exit_non_zero(make_server: Any) -> None:
    server = make_server()
    missing = cli(server, "credits", "grant", "nobody", "5")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
    assert "nobody" in missing.stderr
    bad_plan = cli(server, "accounts", "create", "x", "--plan", "no-such-plan")
    assert bad_plan.returncode == 1
    assert "no-such-plan" in bad_plan.stderr
    ok(server, "accounts", "create", "twice")
    again = cli(server, "accounts", "create", "twice")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    negative = cli(server, "credits", "grant", "twice", "-1")
    assert negative.returncode == 1
    assert "positive" in negative.stderr


def test_sdk_reads_the_account_and_its_credits(make_server: Any) -> None:
    server = make_server()
    ok(server, "plans", "set", "paid", "--prepaid")
    ok(server, "accounts", "create", "sdk-user", "--plan", "paid")
    key = ok(server, "keys", "create", "--account", "sdk-user").strip()
    ok(server, "credits", "grant", "sdk-user", "7.5")
    with Client(api_key=key, base_url=server.base_url) as client:
        account = client.account()
        assert account["name"] == "sdk-user"
        assert account["plan"]["prepaid"] is True
        assert account["credits"] == {"balance": 7.5, "reserved": 0.0, "available": 7.5}
        assert client.credits()["credits"]["total"] == 7.5


def test_config_reference_prints_the_settings_document() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "predictd", "config", "reference"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / "docs" / "settings.md").read_text()
