"""``predictd predict`` and ``predictd predictions ...`` run as subprocesses against a live predictd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from ..conftest import ROOT, Server


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTD_")}
    return subprocess.run(
        [sys.executable, "-m", "predictd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return server.key()


@pytest.fixture(scope="module")
def raw(server: Server, key: str) -> httpx.Client:
    return server.client(key)


def target(server: Server, key: str) -> list[str]:
    return ["--base-url", server.base_url, "--api-key", key]


def test_predict_prints_the_output(server: Server, key: str) -> None:
    done = cli("predict", "echo", "-i", "text=hello", *target(server, key))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == "hello"


def test_values_are_json_when_they_parse(server: Server, key: str) -> None:
    done = cli("predict", "sleep", "-i", "ms=10", *target(server, key))
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == "slept 10 ms"  # 10 was sent as a number: a string fails validation
    done = cli("predict", "echo", "--input", 'text={"not": "a string"}', *target(server, key))
    assert done.returncode == 1
    assert "INVALID_INPUT" in done.stderr


def test_an_image_file_goes_in_and_the_image_output_is_saved(
    server: Server, key: str, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (120, 80), (200, 40, 90)).save(photo)
    out_dir = tmp_path / "out"
    done = cli(
        "predict",
        "thumbnail",
        "-i",
        f"image=@{photo}",
        "-i",
        "size=40",
        "--output-dir",
        str(out_dir),
        *target(server, key),
    )
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(paths) == 1
    saved = paths[0]
    assert saved.parent == out_dir
    assert saved.suffix == ".png"
    data = saved.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(saved) as image:
        assert image.format == "PNG"
        assert max(image.size) == 40


def test_a_data_uri_output_is_saved_too(server: Server, key: str, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (10, 200, 90)).save(photo)
    done = cli(
        "predict",
        "thumbnail",
        "-i",
        f"image=@{photo}",
        "-i",
        "return_base64=true",
        "-i",
        "output_format=jpeg",
        "-o",
        str(tmp_path),
        *target(server, key),
    )
    assert done.returncode == 0, done.stderr
    saved = Path(done.stdout.strip())
    assert saved.suffix == ".jpg"
    with Image.open(saved) as image:
        assert image.format == "JPEG"


def test_a_failed_prediction_exits_non_zero_with_its_error_name(server: Server, key: str) -> None:
    done = cli("predict", "raises", "-i", "kind=pose", *target(server, key))
    assert done.returncode == 1
    assert "PoseError" in done.stderr
    assert "no person found" in done.stderr
    assert done.stdout == ""


def test_an_api_error_exits_non_zero_with_its_error_id(server: Server, key: str) -> None:
    done = cli("predict", "nope", "-i", "text=x", *target(server, key))
    assert done.returncode == 1
    assert "MODEL_NOT_FOUND" in done.stderr


def test_a_malformed_input_is_a_usage_error(server: Server, key: str) -> None:
    done = cli("predict", "echo", "-i", "no-equals-sign", *target(server, key))
    assert done.returncode == 2
    assert "key=value" in done.stderr


def test_predictions_list_get_and_cancel(server: Server) -> None:
    key = server.key()
    with server.client(key) as raw:
        ids = [
            raw.post(
                "/v1/predictions", json={"model": "echo", "input": {"text": str(n)}, "await": True}
            ).json()["id"]
            for n in range(3)
        ]
        sleeping: dict[str, Any] = raw.post(
            "/v1/predictions", json={"model": "sleep", "input": {"ms": 600_000}}
        ).json()
    env = {"PREDICTD_BASE_URL": server.base_url, "PREDICTD_API_KEY": key}  # from the environment this time
    listed = cli("predictions", "list", "--per-page", "2", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == [sleeping["id"], *reversed(ids)]
    assert rows[1][1:3] == ["succeeded", "echo"]
    limited = cli("predictions", "list", "--limit", "1", "--json", env=env)
    assert [orjson.loads(line)["id"] for line in limited.stdout.splitlines()] == [sleeping["id"]]

    cancelled = cli("predictions", "cancel", sleeping["id"], env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert orjson.loads(cancelled.stdout)["status"] == "cancelled"
    shown = cli("predictions", "get", sleeping["id"], env=env)
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout)["status"] == "cancelled"
    again = cli("predictions", "cancel", sleeping["id"], env=env)
    assert again.returncode == 1
    assert "PREDICTION_NOT_CANCELLABLE" in again.stderr
