"""What predictd keeps in its data folder is its owner's only: the database (key digests, users' inputs and
outputs, webhook secrets), output images and the demo key. Checked on the files of a real server."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest

from ..conftest import FIXTURE_MODELS, png_bytes

CONFIG = f"""
[[models]]
slug = "thumbnail"
ref = "{FIXTURE_MODELS}:Thumbnail"
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shared_bits(path: Path) -> int:
    """The permission bits it grants anyone but its owner."""
    return mode(path) & 0o077


def an_output_file(server: Any) -> Path:
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    with server.client(server.key()) as client:
        response = client.post(
            "/v1/predictions", json={"model": "thumbnail", "input": {"image": image}, "await": True}
        )
        assert response.json()["status"] == "succeeded", response.text
    name = response.json()["output"].rsplit("/", 1)[1]
    return server.data_dir / "outputs" / name


def test_the_data_folder_and_everything_in_it_are_the_owners_only(make_server: Any, backend: str) -> None:
    server = make_server(CONFIG)
    output = an_output_file(server)
    assert mode(server.data_dir) == 0o700, "predictd created the data folder: it is private"
    assert mode(server.data_dir / "outputs") == 0o700
    assert mode(output) == 0o600
    if backend == "embedded":
        database = {p.name: mode(p) for p in server.data_dir.glob("predictd.sqlite3*")}
        assert {"predictd.sqlite3", "predictd.sqlite3-wal", "predictd.sqlite3-shm"} <= set(database)
        assert database == dict.fromkeys(database, 0o600)


@pytest.mark.backends("embedded")  # the same start-up step runs in every process; the database is SQLite's
def test_files_an_earlier_version_left_readable_are_narrowed_at_start(make_server: Any) -> None:
    server = make_server(CONFIG)
    output = an_output_file(server)
    server.stop()
    readable = [server.data_dir / "outputs", *server.data_dir.glob("predictd.sqlite3*")]
    for path in readable:
        path.chmod(0o755 if path.is_dir() else 0o644)
    server.data_dir.chmod(0o755)  # the operator's choice for the folder itself: kept
    server.start()
    assert mode(server.data_dir) == 0o755
    for path in readable:
        assert shared_bits(path) == 0, path
    assert shared_bits(output) == 0 or shared_bits(output.parent) == 0  # unreachable through its folder
    an_output_file(server)
