"""Webhooks end to end: a real receiver on 127.0.0.1 verifying Standard Webhooks signatures, down for the
first attempts and up later, across a predictd restart; 410 Gone; secret rotation; attempts visible."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from ..conftest import free_port

FAST_RETRIES = """
[webhooks]
schedule_s = [0.3, 0.5, 0.8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
attempt_timeout_s = 2
allowed_networks = ["127.0.0.1/32"]
"""


@dataclass
class Receiver:
    """A webhook receiver that only accepts correctly signed requests, and records them."""

    port: int
    secrets: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    gone_paths: set[str] = field(default_factory=set)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if self.path in receiver.gone_paths:
                    receiver.received.append({"path": self.path, "id": headers["webhook-id"], "gone": True})
                    self.send_response(410)
                    self.end_headers()
                    return
                verified = None
                for secret in receiver.secrets:
                    try:
                        verified = Webhook(secret).verify(body, headers)
                        break
                    except Exception:
                        continue
                if verified is None:
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.received.append(
                    {
                        "path": self.path,
                        "id": headers["webhook-id"],
                        "event": headers["x-predictd-event"],
                        "payload": orjson.loads(body),
                        "signature": headers["webhook-signature"],
                        "timestamp": headers["webhook-timestamp"],
                        "body": body,
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def unique(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.received if not r.get("gone")}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(free_port())
    yield made
    made.stop()


def secrets_of(client: httpx.Client) -> list[str]:
    return list(client.get("/v1/webhooks/secret").json()["valid_secrets"])


def deliveries(client: httpx.Client, prediction_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/predictions/{prediction_id}/webhooks").json()["data"])


def first_delivery(client: httpx.Client, prediction_id: str) -> dict[str, Any]:
    """The prediction's first delivery, or an empty placeholder before its state change has planned one."""
    found = deliveries(client, prediction_id)
    return found[0] if found else {"attempts": 0, "status": None}


def wait_until(condition: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_every_event_arrives_exactly_once_across_receiver_downtime_and_a_restart(
    make_server: Any, receiver: Receiver
) -> None:
    first = make_server("shutdown_grace_s = 0\n" + FAST_RETRIES)
    key = first.key()
    expected: Counter[tuple[str, str]] = Counter()
    with first.client(key) as client:
        hook = {"url": receiver.url, "events": ["start", "output", "completed"]}
        native_ids = []
        for text in ("a", "b", "c"):
            body = client.post(
                "/v1/predictions", json={"model": "echo", "input": {"text": text}, "webhook": hook}
            )
            native_ids.append(body.json()["id"])
        failing = client.post(
            "/v1/predictions",
            json={"model": "sleep", "input": {"ms": -1}, "webhook": {"url": receiver.url}},
        )
        assert failing.status_code == 400  # refused before queueing: no prediction, no webhook
        cancelled = client.post(
            "/v1/predictions",
            json={"model": "sleep", "input": {"ms": 20000}, "webhook": {"url": receiver.url}},
        ).json()["id"]
        fashn = client.post(
            f"/v1/run?webhook_url={receiver.url}", json={"model_name": "echo", "inputs": {"text": "f"}}
        ).json()["id"]
        for prediction_id in native_ids:
            expected.update(
                {(prediction_id, "start"): 1, (prediction_id, "output"): 1, (prediction_id, "completed"): 1}
            )
        expected[(cancelled, "completed")] += 1
        expected[(fashn, "completed")] += 1
        receiver.secrets = secrets_of(client)
        time.sleep(0.5)
        client.post(f"/v1/predictions/{cancelled}/cancel")
        # The receiver is down: attempts fail and are recorded, and the deliveries stay pending.
        wait_until(
            lambda: all(d["attempts"] >= 1 for d in deliveries(client, native_ids[0])), what="failures"
        )
        failed = deliveries(client, native_ids[0])[0]
        assert failed["status"] == "pending"
        assert failed["history"][0]["status_code"] is None
        assert failed["history"][0]["error"]

    first.stop()  # predictd restarts in the middle; the outbox is in its database
    second = first.successor().start()
    try:
        receiver.start()
        with second.client(key) as client:
            all_ids = [*native_ids, cancelled, fashn]
            wait_until(
                lambda: all(d["status"] == "delivered" for p in all_ids for d in deliveries(client, p)),
                timeout=60,
                what="every delivery delivered",
            )
            history = first_delivery(client, native_ids[0])["history"]
            assert history[-1]["status_code"] == 204
            assert len(history) >= 2
    finally:
        second.stop()

    got = Counter((r["payload"].get("id"), r["event"]) for r in receiver.unique().values())
    assert got == expected
    assert receiver.rejected == 0
    native_completed = next(
        r
        for r in receiver.unique().values()
        if r["payload"]["id"] == native_ids[0] and r["event"] == "completed"
    )
    assert native_completed["payload"]["status"] == "succeeded"
    assert native_completed["payload"]["output"] == "a"
    start = next(
        r for r in receiver.unique().values() if r["payload"]["id"] == native_ids[0] and r["event"] == "start"
    )
    assert start["payload"]["status"] == "processing"
    fashn_payload = next(r for r in receiver.unique().values() if r["payload"]["id"] == fashn)["payload"]
    assert fashn_payload == {"id": fashn, "status": "completed", "output": ["f"], "error": None}
    cancel_payload = next(r for r in receiver.unique().values() if r["payload"]["id"] == cancelled)["payload"]
    assert cancel_payload["status"] == "cancelled"


def test_retries_keep_the_same_webhook_id(make_server: Any, receiver: Receiver) -> None:
    server = make_server(FAST_RETRIES)
    with server.client(server.key()) as client:
        receiver.secrets = secrets_of(client)
        receiver.start()
        receiver.secrets = ["whsec_" + "A" * 43]  # wrong secret: the receiver answers 401 and we retry
        prediction_id = client.post(
            "/v1/predictions",
            json={"model": "echo", "input": {"text": "x"}, "webhook": {"url": receiver.url}},
        ).json()["id"]
        wait_until(lambda: first_delivery(client, prediction_id)["attempts"] >= 2, what="two attempts")
        receiver.secrets = secrets_of(client)
        wait_until(lambda: first_delivery(client, prediction_id)["status"] == "delivered", what="delivery")
        (delivery,) = deliveries(client, prediction_id)
        assert [a["status_code"] for a in delivery["history"]][:2] == [401, 401]
        assert delivery["history"][-1]["status_code"] == 204
        assert list(receiver.unique()) == [delivery["id"]]


def test_410_gone_disables_the_url_for_that_prediction(make_server: Any, receiver: Receiver) -> None:
    server = make_server(FAST_RETRIES)
    receiver.gone_paths = {"/gone"}
    receiver.start()
    gone_url = receiver.url.replace("/hook", "/gone")
    with server.client(server.key()) as client:
        receiver.secrets = secrets_of(client)
        prediction_id = client.post(
            "/v1/predictions",
            json={
                "model": "sleep",
                "input": {"ms": 800},
                "webhook": {"url": gone_url, "events": ["start", "output", "completed"]},
            },
        ).json()["id"]
        wait_until(lambda: client.get(f"/v1/predictions/{prediction_id}").json()["status"] == "succeeded")
        wait_until(
            lambda: (
                all(d["status"] == "disabled" for d in deliveries(client, prediction_id))
                and len(deliveries(client, prediction_id)) == 3
            ),
            what="all disabled",
        )
        time.sleep(1.0)
    hits = [r for r in receiver.received if r["path"] == "/gone"]
    assert len(hits) == 1, hits


def _delivered_echo(client: Any, receiver: Receiver) -> tuple[str, dict[str, Any], dict[str, str]]:
    """An echo prediction with a webhook to ``receiver``, once delivered: its id, the message the receiver
    got, and that message's Standard Webhooks headers."""
    prediction_id = client.post(
        "/v1/predictions",
        json={"model": "echo", "input": {"text": "x"}, "webhook": {"url": receiver.url}},
    ).json()["id"]
    wait_until(lambda: first_delivery(client, prediction_id)["status"] == "delivered", what="delivery")
    (message,) = receiver.unique().values()
    headers = {
        "webhook-id": message["id"],
        "webhook-timestamp": message["timestamp"],
        "webhook-signature": message["signature"],
    }
    return prediction_id, message, headers


def test_secret_rotation_signs_with_both_secrets(make_server: Any, receiver: Receiver) -> None:
    server = make_server(FAST_RETRIES)
    receiver.start()
    with server.client(server.key()) as client:
        old = client.get("/v1/webhooks/secret").json()["secret"]
        assert old.startswith("whsec_")
        rotated = client.post("/v1/webhooks/secret/rotate").json()
        new = rotated["secret"]
        assert new != old
        assert rotated["valid_secrets"] == [new, old]
        receiver.secrets = [old]  # a receiver not yet updated keeps working during the rotation
        prediction_id, message, headers = _delivered_echo(client, receiver)
    assert len(message["signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(message["body"], headers)["id"] == prediction_id
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "B" * 43).verify(message["body"], headers)


def test_rotating_again_and_again_keeps_two_secrets(make_server: Any, receiver: Receiver) -> None:
    """Each live secret adds a signature to every webhook: rotations keep the new one and the one before."""
    server = make_server(FAST_RETRIES)
    receiver.start()
    with server.client(server.key()) as client:
        issued = [client.get("/v1/webhooks/secret").json()["secret"]]
        for _ in range(5):
            rotated = client.post("/v1/webhooks/secret/rotate").json()
            issued.append(rotated["secret"])
            assert rotated["valid_secrets"] == issued[-2:][::-1]
        assert client.get("/v1/webhooks/secret").json()["valid_secrets"] == [issued[-1], issued[-2]]
        receiver.secrets = [issued[-1]]
        prediction_id, message, headers = _delivered_echo(client, receiver)
    assert len(message["signature"].split(" ")) == 2
    for secret in issued[-2:]:
        assert Webhook(secret).verify(message["body"], headers)["id"] == prediction_id
    for secret in issued[:-2]:
        with pytest.raises(Exception, match="signature"):
            Webhook(secret).verify(message["body"], headers)


def test_webhook_urls_on_private_addresses_are_refused_by_default(
    make_server: Any, receiver: Receiver
) -> None:
    """An address the guard is sure to refuse is the submit's 400, naming the setting that allows it."""
    server = make_server("[webhooks]\nschedule_s = [0.2]\n")
    receiver.start()
    with server.client(server.key()) as client:
        refused = client.post(
            "/v1/predictions",
            json={"model": "echo", "input": {"text": "x"}, "webhook": {"url": receiver.url}},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_id"] == "INVALID_INPUT"
        assert "loopback" in refused.json()["message"]
        assert "[webhooks] allow_private" in refused.json()["message"]
    assert receiver.received == []


def test_webhook_names_resolving_to_private_addresses_are_refused_as_they_are_sent(
    make_server: Any, receiver: Receiver
) -> None:
    """A DNS name is judged as it resolves, at every attempt: ``localhost`` may be ::1, which this
    deployment allows, so the submit is accepted; it resolves to 127.0.0.1, which it does not."""
    server = make_server('[webhooks]\nschedule_s = [0.2]\nallowed_networks = ["::1/128"]\n')
    receiver.start()
    with server.client(server.key()) as client:
        receiver.secrets = secrets_of(client)
        prediction_id = client.post(
            "/v1/predictions",
            json={
                "model": "echo",
                "input": {"text": "x"},
                "webhook": {"url": f"http://localhost:{receiver.port}/hook"},
            },
        ).json()["id"]
        wait_until(lambda: first_delivery(client, prediction_id)["status"] == "failed", what="giving up")
        (delivery,) = deliveries(client, prediction_id)
        assert "loopback" in delivery["last_error"]
    assert receiver.received == []
