"""The operator's command line against a real server's store: plans, accounts, credits, suspension,
disabled models, keys; each change is seen by the running server at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
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


def bare_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`predictd ARGS` as an operator types it in ``cwd``: no PREDICTD_* variable, only the flags given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTD_")}
    return subprocess.run(
        [sys.executable, "-m", "predictd", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


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


def test_cli_refuses_numbers_beyond_their_bounds_as_the_admin_api_does(make_server: Any) -> None:
    """The same use case checks both (issue #22): nothing is written, and the message names the field."""
    server = make_server()
    ok(server, "accounts", "create", "bounded")
    for amount in ("1e300", "inf", "nan"):
        huge = cli(server, "credits", "adjust", "bounded", amount)
        assert huge.returncode == 1, huge.stdout
        assert "INVALID_INPUT" in huge.stderr
        assert "amount must be a finite number" in huge.stderr
    window = cli(server, "plans", "set", "forever", "--rate-limit", "5", "--rate-window-s", "1e308")
    assert window.returncode == 1, window.stdout
    assert "rate_window_s must be" in window.stderr
    limit = cli(server, "plans", "set", "wide", "--concurrency-limit", str(2**31))
    assert limit.returncode == 1, limit.stdout
    assert "concurrency_limit must be 1 to 2147483647" in limit.stderr
    assert "forever" not in ok(server, "plans", "list")
    assert "'balance': 0.0" in ok(server, "credits", "show", "bounded")


def test_sdk_reads_the_account_and_its_credits(make_server: Any) -> None:
    server = make_server()
    ok(server, "plans", "set", "paid", "--prepaid", "--no-security-screen")
    assert ok(server, "plans", "list").splitlines()[1].split()[-2:] == ["yes", "off"]  # prepaid, screen
    ok(server, "accounts", "create", "sdk-user", "--plan", "paid")
    key = ok(server, "keys", "create", "--account", "sdk-user").strip()
    ok(server, "credits", "grant", "sdk-user", "7.5")
    with Client(api_key=key, base_url=server.base_url) as client:
        account = client.account()
        assert account["name"] == "sdk-user"
        assert account["plan"]["prepaid"] is True
        assert account["plan"]["security_screen"] is False
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


def test_without_a_database_the_admin_commands_refuse_and_create_nothing(tmp_path: Path) -> None:
    """A new user's first `accounts create` beside a deployment whose settings it was not given."""
    refused = bare_cli(tmp_path, "accounts", "create", "acme")
    assert refused.returncode == 1
    expected = tmp_path / "predictd-data" / "predictd.sqlite3"
    assert f"there is no SQLite database at {expected}" in refused.stderr
    assert "database_url is not set" in refused.stderr
    assert "--create-database" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert list(tmp_path.iterdir()) == []  # not even the data folder

    listed = bare_cli(tmp_path, "keys", "list", "--account", "acme", "--json")
    assert listed.returncode == 1
    assert list(tmp_path.iterdir()) == []

    created = bare_cli(tmp_path, "--create-database", "accounts", "create", "acme")
    assert created.returncode == 0, created.stderr
    assert expected.is_file()
    listed = bare_cli(tmp_path, "accounts", "list", "--json")
    assert [account["name"] for account in json_lines(listed.stdout)] == ["acme"]


def test_an_empty_or_missing_postgresql_database_is_refused_the_same_way(
    tmp_path: Path, pg_database: str
) -> None:
    plain = pg_database.replace("+asyncpg", "")
    refused = bare_cli(tmp_path, "--database-url", plain, "accounts", "create", "acme")
    assert refused.returncode == 1
    assert f"the database {plain} has no predictd tables" in refused.stderr
    assert "--create-database" in refused.stderr

    missing = plain.rsplit("/", 1)[0] + "/predictd_no_such_database"
    for extra in ([], ["--create-database"]):  # predictd creates tables, not PostgreSQL databases
        unreachable = bare_cli(tmp_path, "--database-url", missing, *extra, "accounts", "list")
        assert unreachable.returncode == 1
        assert 'database "predictd_no_such_database" does not exist' in unreachable.stderr
        assert "Traceback" not in unreachable.stderr

    created = bare_cli(tmp_path, "--database", plain, "--create-database", "accounts", "create", "acme")
    assert created.returncode == 0, created.stderr
    listed = bare_cli(tmp_path, "--database-url", plain, "accounts", "list", "--json")
    assert [a["name"] for a in json_lines(listed.stdout)] == ["acme"]
    assert list(tmp_path.iterdir()) == []  # no SQLite file made on the side


def test_the_admin_commands_find_the_servers_database_through_its_config_file(
    make_server: Any, tmp_path: Path
) -> None:
    server: Server = make_server(start=False)
    settings = f'data_dir = "{server.data_dir}"\n'
    if server.scaled:
        settings += f'database_url = "{server.env["PREDICTD_DATABASE_URL"]}"\n'
    server.config = settings + server.config
    server.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = str(server.workdir / "predictd.toml")  # the very file the server was started with

    created = bare_cli(elsewhere, "--config", config, "keys", "create", "--account", "through-config")
    assert created.returncode == 0, created.stderr
    with server.client(created.stdout.strip()) as client:
        assert client.get("/v1/models").status_code == 200
    assert list(elsewhere.iterdir()) == []


def test_lists_print_whole_ids_and_json_when_piped(make_server: Any) -> None:
    server = make_server()
    ok(server, "plans", "set", "team", "--models", "echo,sleep", "--rate-limit", "30", "--prepaid")
    account_id = ok(server, "accounts", "create", "listed", "--plan", "team").split()[0]
    for _ in range(2):
        ok(server, "keys", "create", "--account", "listed")
    ok(server, "credits", "grant", "listed", "4", "--note", "welcome")
    stored = server.with_database(lambda db: db.accounts.list_keys(account_id))
    key_ids = [key.id for key in stored]

    # What `cli` captures is a pipe: nothing may be cut to fit a terminal's width.
    table = ok(server, "keys", "list", "--account", "listed")
    assert all(key_id in table for key_id in key_ids)
    assert account_id in ok(server, "accounts", "list")

    keys = json_lines(ok(server, "keys", "list", "--account", "listed", "--json"))
    assert [k["id"] for k in keys] == key_ids
    assert {k["account_id"] for k in keys} == {account_id}
    assert all(k["prefix"].startswith("pd_") and k["revoked_at"] is None for k in keys)

    ok(server, "keys", "revoke", key_ids[0])
    revoked = json_lines(ok(server, "keys", "list", "--account", "listed", "--json"))
    assert [k["revoked_at"] is not None for k in revoked] == [True, False]
    again = cli(server, "keys", "revoke", key_ids[0])
    assert again.returncode == 1
    assert f"No active key with id '{key_ids[0]}'" in again.stderr

    (account,) = [a for a in json_lines(ok(server, "accounts", "list", "--json")) if a["name"] == "listed"]
    assert account["id"] == account_id
    assert (account["plan"], account["status"]) == ("team", "active")

    (plan,) = json_lines(ok(server, "plans", "list", "--json"))
    assert plan == {
        "name": "team",
        "models": ["echo", "sleep"],
        "rate_limit": 30,
        "rate_window_s": 60.0,
        "key_rate_limit": None,
        "concurrency_limit": None,
        "prepaid": True,
        "security_screen": True,
    }

    (shown,) = json_lines(ok(server, "credits", "show", "listed", "--json"))
    assert shown["account"]["id"] == account_id
    assert shown["credits"] == {"balance": 4.0, "reserved": 0.0, "available": 4.0}
    assert [(e["kind"], e["amount"], e["note"]) for e in shown["ledger"]] == [("grant", 4.0, "welcome")]
