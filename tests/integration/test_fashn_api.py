"""The FASHN surface over real HTTP: submit, status vocabulary, output lists, credits header, cancel, the
API-level error bodies, and every runtime error of the seed observed through GET /v1/status/{id}, each
caused for real (a real origin server, a real NSFW model, a real dying worker)."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from predictd.errors import API_ERRORS, ErrorId

from ..conftest import FIXTURE_MODELS, Origin, Server, png_bytes

FASHN_PENDING = {"starting", "in_queue", "processing"}
NSFW_TRIGGER = Path(__file__).resolve().parent.parent / "fixtures" / "nsfw_trigger.png"


def assert_fashn_error(response: httpx.Response, error_id: ErrorId, *fragments: str) -> dict[str, Any]:
    spec = API_ERRORS[error_id]
    assert response.status_code == spec.fashn_status, response.text
    body = response.json()
    assert body["error"] == spec.fashn_name
    assert body["message"]
    assert body["retryable"] is spec.retryable
    assert "id" not in body
    assert "status" not in body
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return dict(body)


def run(client: httpx.Client, model: str, inputs: dict[str, Any]) -> str:
    response = client.post("/v1/run", json={"model_name": model, "inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] is None
    return str(body["id"])


def settle(client: httpx.Client, prediction_id: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/v1/status/{prediction_id}")
        assert response.status_code == 200, response.text
        if response.json()["status"] not in FASHN_PENDING:
            return response
        time.sleep(0.02)
    raise AssertionError(f"{prediction_id} did not settle")


def failure(client: httpx.Client, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    response = settle(client, run(client, model, inputs))
    body = response.json()
    assert body["output"] is None
    assert response.headers["x-fashn-credits-used"] == "0"
    return dict(body)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def client(server: Server) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.key()}"}, timeout=30
    )


# -- submit and status ---------------------------------------------------------------------------------------


def test_run_status_completed_with_output_list_and_credits(client: httpx.Client) -> None:
    prediction_id = run(client, "echo", {"text": "hi"})
    response = settle(client, prediction_id)
    assert response.json() == {"id": prediction_id, "status": "completed", "output": ["hi"], "error": None}
    assert response.headers["x-fashn-credits-used"] == "1"


def test_status_in_queue_and_processing_carry_no_credits_header(client: httpx.Client) -> None:
    blockers = [run(client, "sleep", {"ms": 1000}) for _ in range(2)]
    queued = run(client, "sleep", {"ms": 10})
    response = client.get(f"/v1/status/{queued}")
    assert response.json()["status"] == "in_queue"
    assert "x-fashn-credits-used" not in response.headers
    assert client.get(f"/v1/status/{blockers[0]}").json()["status"] in {"in_queue", "processing"}
    assert settle(client, queued).json()["status"] == "completed"


def test_cancel_answers_canceled(client: httpx.Client) -> None:
    prediction_id = run(client, "sleep", {"ms": 20000})
    response = client.post(f"/v1/cancel/{prediction_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.headers["x-fashn-credits-used"] == "0"
    again = client.post(f"/v1/cancel/{prediction_id}")
    assert_fashn_error(again, ErrorId.PREDICTION_NOT_CANCELLABLE, "cancelled")


def test_a_prediction_over_its_deadline_is_time_out(client: httpx.Client) -> None:
    body = failure(client, "slow", {"ms": 10_000})
    assert body["status"] == "time_out"
    assert body["error"]["name"] == "DeadlineExceeded"


def test_the_native_surface_sees_the_same_prediction(server: Server, client: httpx.Client) -> None:
    prediction_id = run(client, "echo", {"text": "both"})
    settle(client, prediction_id)
    native = client.get(f"/v1/predictions/{prediction_id}").json()
    assert native["status"] == "succeeded"
    assert native["output"] == "both"
    assert native["credits_used"] == 1


# -- API-level errors ----------------------------------------------------------------------------------------


def test_bad_requests(client: httpx.Client) -> None:
    assert_fashn_error(
        client.post("/v1/run", json={"inputs": {}}), ErrorId.MISSING_REQUIRED_FIELD, "model_name"
    )
    assert_fashn_error(
        client.post("/v1/run", json={"model_name": "echo"}), ErrorId.MISSING_REQUIRED_FIELD, "inputs"
    )
    assert_fashn_error(
        client.post("/v1/run", json={"model_name": "echo", "inputs": {"text": 5}}),
        ErrorId.INVALID_INPUT,
        "input.text",
    )
    assert_fashn_error(
        client.post("/v1/run", content=b"{", headers={"content-type": "application/json"}),
        ErrorId.INVALID_INPUT,
        "not valid JSON",
    )
    assert_fashn_error(
        client.post("/v1/run", content=b"x", headers={"content-type": "text/plain"}),
        ErrorId.UNSUPPORTED_MEDIA_TYPE,
    )


def test_unauthorized_access(server: Server) -> None:
    with httpx.Client(base_url=server.base_url) as anonymous:
        assert_fashn_error(
            anonymous.post("/v1/run", json={"model_name": "echo", "inputs": {}}), ErrorId.UNAUTHORIZED
        )
        assert_fashn_error(
            anonymous.get("/v1/status/x", headers={"Authorization": "Bearer nope"}), ErrorId.UNAUTHORIZED
        )


def test_not_found(server: Server, client: httpx.Client) -> None:
    assert_fashn_error(
        client.post("/v1/run", json={"model_name": "tryon-v9", "inputs": {}}),
        ErrorId.MODEL_NOT_FOUND,
        "tryon-v9",
    )
    assert_fashn_error(client.get("/v1/status/unknown"), ErrorId.PREDICTION_NOT_FOUND)
    mine = run(client, "echo", {"text": "mine"})
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.key()}"}) as other:
        assert_fashn_error(other.get(f"/v1/status/{mine}"), ErrorId.PREDICTION_NOT_FOUND)
        assert_fashn_error(other.post(f"/v1/cancel/{mine}"), ErrorId.PREDICTION_NOT_FOUND)


def test_rate_limit_exceeded_with_headers(make_server: Any) -> None:
    limited = make_server("rate_limit = 3\nrate_window_s = 60\n")
    with httpx.Client(base_url=limited.base_url, headers={"Authorization": f"Bearer {limited.key()}"}) as c:
        first = c.get("/v1/models")
        assert first.headers["RateLimit-Limit"] == "3"
        assert first.headers["RateLimit-Remaining"] == "2"
        assert c.get("/v1/models").headers["RateLimit-Remaining"] == "1"
        assert c.get("/v1/models").headers["RateLimit-Remaining"] == "0"
        refused = c.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "x"}})
        assert_fashn_error(refused, ErrorId.RATE_LIMIT_EXCEEDED, "3 requests in 60 s")
        assert 1 <= int(refused.headers["Retry-After"]) <= 20
        assert refused.headers["x-should-retry"] == "true"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert refused.headers["RateLimit-Policy"] == '"account";q=3;w=60'
        native = c.get("/v1/models")
        assert native.status_code == 429
        assert native.json()["error_id"] == "RATE_LIMIT_EXCEEDED"


def test_concurrency_limit_is_released_exactly_when_a_prediction_ends(make_server: Any) -> None:
    limited = make_server("concurrency_limit = 2\n")
    with httpx.Client(base_url=limited.base_url, headers={"Authorization": f"Bearer {limited.key()}"}) as c:
        first = run(c, "sleep", {"ms": 20000})
        second = run(c, "sleep", {"ms": 600})
        refused = c.post("/v1/run", json={"model_name": "echo", "inputs": {"text": "x"}})
        assert_fashn_error(refused, ErrorId.CONCURRENCY_LIMIT_EXCEEDED, "2 predictions are already in flight")
        assert refused.headers["Retry-After"] == "1"
        native = c.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}})
        assert native.status_code == 429
        assert native.json()["error_id"] == "RATE_LIMIT_EXCEEDED"
        assert c.post(f"/v1/cancel/{first}").status_code == 200  # a cancel frees a slot at once
        run(c, "echo", {"text": "fits now"})
        settle(c, second)


def test_internal_server_error_for_a_model_whose_setup_fails(client: httpx.Client) -> None:
    """As on the Skytells surface: 500, and not worth retrying until an operator fixes the model."""
    response = client.post("/v1/run", json={"model_name": "broken", "inputs": {"text": "x"}})
    body = assert_fashn_error(response, ErrorId.MODEL_SETUP_FAILED, "broken")
    assert response.status_code == 500
    assert body["retryable"] is False
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers


def test_content_policy_violation_before_queueing(client: httpx.Client) -> None:
    response = client.post(
        "/v1/run", json={"model_name": "caption", "inputs": {"prompt": "a ForbiddenWord here"}}
    )
    assert_fashn_error(response, ErrorId.CONTENT_POLICY_VIOLATION, "input.prompt")
    native = client.post("/v1/predictions", json={"model": "caption", "input": {"prompt": "forbiddenword"}})
    assert native.status_code == 422
    assert native.json()["error_id"] == "CONTENT_POLICY_VIOLATION"
    allowed = run(client, "caption", {"prompt": "a red dress", "moderation_level": "conservative"})
    assert settle(client, allowed).json()["output"] == ["caption for: a red dress"]
    unchecked = run(client, "caption", {"prompt": "forbiddenword", "moderation_level": "none"})
    assert settle(client, unchecked).json()["status"] == "completed"


def test_inline_media_over_the_deployment_limit_is_an_infrastructure_error(make_server: Any) -> None:
    config = (
        f'[[models]]\nslug = "thumbnail"\nref = "{FIXTURE_MODELS}:Thumbnail"\n'
        "[media]\nmax_total_inline_bytes = 1000\n"
    )
    small = make_server(config)
    with httpx.Client(base_url=small.base_url, headers={"x-api-key": small.key()}) as c:
        big = data_uri(png_bytes((300, 300)) + b"\0" * 2000)
        response = c.post("/v1/run", json={"model_name": "thumbnail", "inputs": {"image": big}})
        assert_fashn_error(response, ErrorId.INFRASTRUCTURE_ERROR, "1000 byte limit")


# -- runtime errors, each from its real cause --------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fragment"),
    [
        ("/missing.png", "404"),
        ("/page.html", "text/html"),
        ("/garbage.png", "decoded"),
    ],
)
def test_image_load_error_from_urls(client: httpx.Client, origin: Origin, image: str, fragment: str) -> None:
    body = failure(client, "thumbnail", {"image": origin.url(image)})
    assert body["status"] == "failed"
    assert body["error"]["name"] == "ImageLoadError"
    assert "input.image" in body["error"]["message"]
    assert fragment in body["error"]["message"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("aGVsbG8=", "data:image"),
        ("data:image/png;base64,@@@not-base64@@@", "base64"),
        (data_uri(b"plain text, not a picture"), "decoded"),
    ],
)
def test_image_load_error_from_data_uris(client: httpx.Client, value: str, fragment: str) -> None:
    body = failure(client, "thumbnail", {"image": value})
    assert body["error"]["name"] == "ImageLoadError"
    assert fragment in body["error"]["message"]


def test_image_urls_on_private_addresses_are_refused_by_default(make_server: Any, origin: Origin) -> None:
    strict = make_server(f'[[models]]\nslug = "thumbnail"\nref = "{FIXTURE_MODELS}:Thumbnail"\n')
    with httpx.Client(base_url=strict.base_url, headers={"x-api-key": strict.key()}) as c:
        for url in (origin.url("/photo.png"), origin.url("/photo.png").replace("127.0.0.1", "localhost")):
            body = failure(c, "thumbnail", {"image": url})
            assert body["error"]["name"] == "ImageLoadError"
            assert "private" in body["error"]["message"] or "loopback" in body["error"]["message"]


def test_content_moderation_error_for_an_input_image(client: httpx.Client) -> None:
    trigger = data_uri(NSFW_TRIGGER.read_bytes())
    body = failure(client, "thumbnail", {"image": trigger, "moderation_level": "permissive"})
    assert body["error"]["name"] == "ContentModerationError"
    assert "input.image" in body["error"]["message"]
    unchecked = settle(client, run(client, "thumbnail", {"image": trigger, "moderation_level": "none"}))
    assert unchecked.json()["status"] == "completed"


def test_input_validation_error(client: httpx.Client) -> None:
    body = failure(client, "raises", {"kind": "inconsistent"})
    assert body["error"]["name"] == "InputValidationError"


def test_third_party_error(client: httpx.Client, origin: Origin) -> None:
    body = failure(client, "upstream", {"url": origin.url("/upstream/down")})
    assert body["error"] == {"name": "ThirdPartyError", "message": "upstream refused the request: HTTP 503"}
    ok = settle(client, run(client, "upstream", {"url": origin.url("/upstream/ok")}))
    assert ok.json()["output"] == ["upstream says hi"]


def test_unavailable_error(client: httpx.Client) -> None:
    body = failure(client, "crash", {"after_ms": 10})
    assert body["error"]["name"] == "UnavailableError"


def test_pipeline_error_and_model_specific_names(client: httpx.Client) -> None:
    assert failure(client, "raises", {"kind": "bug"})["error"]["name"] == "PipelineError"
    assert failure(client, "raises", {"kind": "pose"})["error"]["name"] == "PoseError"


# -- outputs ---------------------------------------------------------------------------------------------


def test_image_outputs_are_stored_behind_unguessable_urls(client: httpx.Client, origin: Origin) -> None:
    response = settle(client, run(client, "thumbnail", {"image": origin.url("/photo.png"), "size": 16}))
    assert response.headers["x-fashn-credits-used"] == "2.5"
    (url,) = response.json()["output"]
    assert url.startswith(str(client.base_url) + "/v1/outputs/")
    assert url.endswith(".png")
    assert len(url.rsplit("/", 1)[1]) == len("x" * 32 + ".png")
    image = httpx.get(url)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert httpx.get(url[:-10] + "AAAAAA.png").status_code == 404


def test_output_format_and_return_base64(client: httpx.Client, origin: Origin) -> None:
    jpeg = settle(
        client, run(client, "thumbnail", {"image": origin.url("/photo.png"), "output_format": "jpeg"})
    )
    (url,) = jpeg.json()["output"]
    assert url.endswith(".jpeg")
    assert httpx.get(url).content.startswith(b"\xff\xd8")
    inline = settle(
        client, run(client, "thumbnail", {"image": origin.url("/photo.png"), "return_base64": True})
    )
    (value,) = inline.json()["output"]
    assert value.startswith("data:image/png;base64,")
    assert base64.b64decode(value.split(",", 1)[1]).startswith(b"\x89PNG")


def test_deleting_a_prediction_deletes_its_output_file(client: httpx.Client, origin: Origin) -> None:
    prediction_id = run(client, "thumbnail", {"image": origin.url("/photo.png")})
    (url,) = settle(client, prediction_id).json()["output"]
    assert httpx.get(url).status_code == 200
    assert client.delete(f"/v1/predictions/{prediction_id}").json()["data_removed"] is True
    assert httpx.get(url).status_code == 404


def test_output_urls_expire(make_server: Any, origin: Origin) -> None:
    # Long enough for the prediction to end and be read on a busy machine (1 s once was not, scaled out).
    ttl_s = 4.0
    config = (
        f'outputs_ttl_s = {ttl_s}\n[[models]]\nslug = "thumbnail"\nref = "{FIXTURE_MODELS}:Thumbnail"\n'
        '[media]\nallowed_networks = ["127.0.0.1/32"]\n'
    )
    short = make_server(config)
    with httpx.Client(base_url=short.base_url, headers={"x-api-key": short.key()}) as c:
        submitted = time.monotonic()
        (url,) = settle(c, run(c, "thumbnail", {"image": origin.url("/photo.png")})).json()["output"]
        assert time.monotonic() - submitted < ttl_s, "the prediction took longer than its output lives"
        assert httpx.get(url).status_code == 200
        time.sleep(ttl_s + 0.5)  # the output was stored before the prediction was read as ended
        assert httpx.get(url).status_code == 404


def test_the_sdks_client_side_options_are_tolerated_but_other_fields_are_not(client: httpx.Client) -> None:
    body = {"model_name": "echo", "inputs": {"text": "x"}, "pollInterval": 50, "timeout": 60000}
    assert client.post("/v1/run", json=body).status_code == 200
    refused = client.post("/v1/run", json={**body, "priority": "high"})
    assert_fashn_error(refused, ErrorId.INVALID_INPUT, "'priority'")
