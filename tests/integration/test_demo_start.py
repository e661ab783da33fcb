"""``predictd serve --demo`` (what ``bin/dev serve`` runs) as a new user meets it: the key it prints keeps
working across restarts of the same data folder, and the request it suggests works."""

from __future__ import annotations

import shlex
import stat
from typing import Any

import httpx
import pytest

from ..conftest import Server, revoke_key_of

pytestmark = pytest.mark.backends("embedded")

KEY_LINE = "API key for account 'default'"


def printed_keys(server: Server) -> list[str]:
    """Every key the deployment's starts printed, oldest first (restarts append to one log)."""
    return [line.rsplit(" ", 1)[-1] for line in server.log().splitlines() if line.startswith(KEY_LINE)]


def status_with(server: Server, key: str) -> int:
    with server.client(key) as client:
        return client.get("/v1/models").status_code


def demo_server(make_server: Any, config: str) -> Server:
    server: Server = make_server(config=config, start=False)
    server.serve_args = ("--demo",)
    return server.start()


def restarted(server: Server) -> Server:
    """The same deployment started again on its data folder (the fixture stops it at the end)."""
    server.stop()
    return server.start()


def test_the_demo_key_survives_restarts_until_it_is_revoked_or_its_file_removed(make_server: Any) -> None:
    first = demo_server(make_server, 'builtin_models = ["echo"]\n')
    (key,) = printed_keys(first)
    kept = first.data_dir / "demo-key"
    assert kept.read_text().strip() == key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert f"(kept in {kept.resolve()})" in first.log()
    assert status_with(first, key) == 200

    second = restarted(first)
    assert printed_keys(second) == [key, key]
    assert status_with(second, key) == 200

    # Revoked (by an operator, or from the console): the next start issues a new one and keeps that.
    second.with_database(lambda db: revoke_key_of(db, key))
    third = restarted(second)
    renewed = printed_keys(third)[-1]
    assert renewed != key
    assert kept.read_text().strip() == renewed
    assert status_with(third, renewed) == 200
    assert status_with(third, key) == 401

    # The file removed: a new key, and the one nobody can print any more is revoked.
    kept.unlink()
    fourth = restarted(third)
    latest = printed_keys(fourth)[-1]
    assert latest not in (key, renewed)
    assert kept.read_text().strip() == latest
    assert status_with(fourth, latest) == 200
    assert status_with(fourth, renewed) == 401


def try_line(server: Server) -> str:
    return next(line for line in server.log().splitlines() if line.startswith("Try: "))


def run_curl(line: str) -> httpx.Response:
    """Send the request a printed ``curl -s URL [-H header]... [-d body]`` line describes."""
    words = shlex.split(line.removeprefix("Try: "))
    assert words[:2] == ["curl", "-s"], line
    url, headers, body = words[2], {}, None
    options = iter(words[3:])
    for option in options:
        value = next(options)
        if option == "-H":
            name, _, given = value.partition(": ")
            headers[name] = given
        else:
            assert option == "-d", line
            body = value.encode()
    method = "POST" if body is not None else "GET"
    return httpx.request(method, url, headers=headers, content=body, timeout=30)


@pytest.mark.parametrize(
    ("builtin", "expected"),
    [('["echo", "sleep"]', "hello"), ('["sleep"]', None)],
    ids=["echo-served", "echo-not-served"],
)
def test_the_suggested_request_works_with_the_models_served(
    make_server: Any, builtin: str, expected: str | None
) -> None:
    server = demo_server(make_server, f"builtin_models = {builtin}\n")
    line = try_line(server)
    answer = run_curl(line)
    assert answer.status_code in (200, 201), answer.text
    if expected is not None:
        assert answer.json()["output"] == expected
    else:
        assert "echo" not in line
        assert [m["slug"] for m in answer.json()] == ["sleep"]
