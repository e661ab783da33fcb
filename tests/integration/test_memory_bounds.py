"""Memory a server keeps of large predictions, and the size of a list of them, over real HTTP on both
backends: the caches of predictions stay within ``[cache] max_bytes`` (read from the
``predictd_cache_bytes`` gauge of /metrics, and from the API process's RSS), and a list leaves out the
inputs and outputs too large for it, each with the link that answers it whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import Server

MIB = 1024 * 1024
CACHE_MAX_BYTES = 48 * MIB
LARGE_TEXT_CHARS = 1_000_000  # the echo model's longest text: a 1 MB input, and as much output
LARGE_PREDICTIONS = 60  # 120 MB of inputs and outputs: more than twice the cache's budget
# What the API process may grow by beyond its caches' budget (allocator slack, buffers of the last request).
RSS_SLACK_BYTES = 48 * MIB
# One page of 50 large predictions: ids, statuses, links, and no input or output of them.
LIST_BODY_MAX_BYTES = 256 * 1024


def large_text(n: int) -> str:
    """A distinct text of LARGE_TEXT_CHARS characters, plain words (nothing for moderation to refuse)."""
    head = f"prediction {n:04d} "
    return (head + "the quick brown fox jumps over the lazy dog " * 25_000)[:LARGE_TEXT_CHARS]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def cache_bytes(server: Server) -> dict[str, float]:
    """``predictd_cache_bytes`` of the API process, per cache."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    return {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "predictd_cache_bytes"
        for sample in family.samples
    }


def echo(client: httpx.Client, text: str) -> dict[str, Any]:
    """An awaited echo prediction of ``text``, succeeded."""
    created = client.post("/v1/predictions", json={"model": "echo", "input": {"text": text}, "await": True})
    assert created.status_code == 201, created.text[:500]
    body: dict[str, Any] = created.json()
    assert body["status"] == "succeeded", body["error"]
    return body


@dataclass
class Loaded:
    server: Server
    client: httpx.Client
    texts: dict[str, str]  # prediction id -> its input text
    rss_at_rest: int


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Loaded]:
    """A server with a 48 MiB cache budget after 60 echo predictions of 1 MB in and 1 MB out, each read
    back once by its status route (what fills the caches)."""
    workdir = tmp_path_factory.mktemp("bounds")
    server = Server(workdir=workdir, config=f"[cache]\nmax_bytes = {CACHE_MAX_BYTES}\n", backend=backend)
    server.start()
    client = server.client(server.key())
    try:
        echo(client, "x")
        rss_at_rest = rss_bytes(server.proc.pid if server.proc else 0)
        texts: dict[str, str] = {}
        for n in range(LARGE_PREDICTIONS):
            text = large_text(n)
            body = echo(client, text)
            read = client.get(f"/v1/predictions/{body['id']}")
            assert read.status_code == 200
            assert read.json()["output"] == text
            texts[body["id"]] = text
        yield Loaded(server, client, texts, rss_at_rest)
    finally:
        client.close()
        server.destroy()


def test_the_caches_of_predictions_stay_within_their_byte_budget(loaded: Loaded) -> None:
    held = cache_bytes(loaded.server)
    assert set(held) == {"status_bodies", "store"}, held
    assert sum(held.values()) <= CACHE_MAX_BYTES, held
    # The caches are in use (a 2 MB status body is under an eighth of its half of the budget)...
    assert held["status_bodies"] >= 2 * LARGE_TEXT_CHARS, held
    if not loaded.server.scaled:
        assert held["store"] >= 2 * LARGE_TEXT_CHARS, held  # ...and embedded mode's remembered rows
    else:
        assert held["store"] == 0, held  # the scaled-out store remembers nothing
    # ...and what the process holds on to is bounded by them, not by the 120 MB that went through it.
    grown = rss_bytes(loaded.server.proc.pid if loaded.server.proc else 0) - loaded.rss_at_rest
    assert grown <= CACHE_MAX_BYTES + RSS_SLACK_BYTES, f"RSS grew by {grown / MIB:.0f} MiB"


def test_a_status_read_past_the_cache_answers_the_whole_prediction(loaded: Loaded) -> None:
    # The oldest predictions were evicted long ago: read from the store again, whole.
    for prediction_id in list(loaded.texts)[:3]:
        body = loaded.client.get(f"/v1/predictions/{prediction_id}").json()
        assert body["input"] == {"text": loaded.texts[prediction_id]}
        assert body["output"] == loaded.texts[prediction_id]


def test_a_list_of_large_predictions_elides_them_and_links_each_whole(loaded: Loaded) -> None:
    client = loaded.client
    small = echo(client, "hi")

    response = client.get("/v1/predictions", params={"per_page": 50})

    assert response.status_code == 200
    assert len(response.content) <= LIST_BODY_MAX_BYTES, f"{len(response.content)} bytes"
    page = response.json()
    assert page["pagination"]["per_page"] == 50
    assert page["pagination"]["total"] == LARGE_PREDICTIONS + 2  # with the warm-up one
    first, *large = page["data"]
    assert first["id"] == small["id"]  # newest first, small enough to be listed whole
    assert (first["input"], first["output"]) == ({"text": "hi"}, "hi")
    assert (first["input_elided"], first["output_elided"]) == (False, False)
    assert len(large) == 49
    for item in large:
        assert item["id"] in loaded.texts
        assert item["status"] == "succeeded"
        assert (item["input"], item["output"]) == (None, None)
        assert (item["input_elided"], item["output_elided"]) == (True, True)
        assert item["data_removed"] is False  # left out of the list, not deleted
        assert item["urls"]["get"] == f"{loaded.server.base_url}/v1/predictions/{item['id']}"
    whole = client.get(large[0]["urls"]["get"])
    assert whole.status_code == 200
    assert whole.json()["input"] == {"text": loaded.texts[large[0]["id"]]}
    assert whole.json()["output"] == loaded.texts[large[0]["id"]]
    assert "input_elided" not in whole.json()


def test_a_list_stops_carrying_inputs_and_outputs_once_the_page_has_its_share(loaded: Loaded) -> None:
    # Each under the 64 KiB a field may weigh in a list, 40 of them twice over the page's 2 MiB.
    client = loaded.server.client(loaded.server.key())
    text = "lorem ipsum dolor sit amet " * 2_000  # 54,000 characters
    ids = [echo(client, text)["id"] for _ in range(40)]

    response = client.get("/v1/predictions", params={"per_page": 50})

    assert response.status_code == 200
    assert len(response.content) <= 2 * MIB + LIST_BODY_MAX_BYTES, f"{len(response.content)} bytes"
    items = response.json()["data"]
    assert [item["id"] for item in items] == ids[::-1]
    whole = [item for item in items if not item["input_elided"] and not item["output_elided"]]
    assert 15 <= len(whole) <= 20  # about 2 MiB of them (108 KB each)...
    assert items[: len(whole)] == whole  # ...the newest, in list order
    for item in whole:
        assert (item["input"], item["output"]) == ({"text": text}, text)
    for item in items[len(whole) + 1 :]:
        assert (item["input"], item["output"]) == (None, None)
        assert (item["input_elided"], item["output_elided"]) == (True, True)
    client.close()
