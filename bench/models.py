"""Built-in model benchmark: a real ``predictd serve`` (embedded mode, the built-in models) on 127.0.0.1.

For each built-in model it reports:

* ``load_s``: the worker's setup time (import, weights, warm-up run) as the worker reports it in its
  ``ready`` message and the server logs it (``worker ready ... setup_time=``);
* ``worker_rss_mib``: the worker process's resident memory after the runs;
* ``predict_p50_ms`` / ``predict_max_ms``: the server-measured ``metrics.predict_time`` of ``--runs``
  sequential predictions after one warm-up prediction: input decoding, the model, output encoding;
* ``e2e_p50_ms``: the same predictions as the client sees them (``POST /v1/predictions`` with ``await``).

Inputs: scikit-image's astronaut photo (512 x 512), a red T-shirt drawn by Pillow, two lines of text
rendered by Pillow (640 x 220), a sentence. Moderation is off (``moderation_level: none``) so that the
figures are the models' own; with moderation on, open_nsfw adds its time per input and output image.

Run from the repository root: ``.venv/bin/python bench/models.py [--runs 5] [--json]``.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noop_e2e import clean_env, free_port, mint_key, start_server, stop_server, tail

from predictd.config.settings import BUILTIN_MODELS

HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 300.0  # every worker loads its model before /health answers
REQUEST_TIMEOUT_S = 120.0
READY = re.compile(r"worker ready\s+model=(?P<model>\S+) pid=(?P<pid>\d+) setup_time=(?P<setup>[0-9.]+)")


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def astronaut() -> Image.Image:
    from skimage import data  # a dev dependency: the benchmark runs in the development environment

    return Image.fromarray(data.astronaut())


def garment() -> Image.Image:
    image = Image.new("RGB", (300, 300), "white")
    outline = [(90, 40), (210, 40), (280, 90), (250, 130), (220, 110), (220, 280), (80, 280), (80, 110)]
    ImageDraw.Draw(image).polygon([*outline, (50, 130), (20, 90)], fill=(200, 20, 20))
    return image


def text_page() -> Image.Image:
    page = Image.new("RGB", (640, 220), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=40)
    draw.text((30, 30), "Invoice 4721", fill="black", font=font)
    draw.text((30, 130), "Total due: 38.50 EUR", fill="black", font=font)
    return page


def inputs_by_model() -> dict[str, dict[str, Any]]:
    photo = png_data_uri(astronaut())
    return {
        "echo": {"text": "x"},
        "sleep": {"ms": 0},
        "background-remove": {"image": photo},
        "background-change": {"image": photo, "background_color": "#00ff00"},
        "pose-detect": {"image": photo},
        "tryon-preview": {"model_image": photo, "garment_image": png_data_uri(garment())},
        "ocr": {"image": png_data_uri(text_page())},
        "text-embed": {"text": "A man is playing a guitar on stage."},
    }


def wait_healthy(proc: Any, base_url: str, log_path: Path) -> float:
    start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() - start < HEALTH_TIMEOUT_S:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode}:\n{tail(log_path)}")
            try:
                if client.get("/health").status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"GET /health not 200 within {HEALTH_TIMEOUT_S:g} s:\n{tail(log_path)}")


def timed(call: Callable[[], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    body = call()
    return time.perf_counter() - start, body


def bench_model(client: httpx.Client, slug: str, inputs: dict[str, Any], runs: int) -> dict[str, Any]:
    payload = {"model": slug, "input": {**inputs}, "await": True}
    if any(isinstance(v, str) and v.startswith("data:image/") for v in inputs.values()):
        payload["input"]["moderation_level"] = "none"

    def one() -> dict[str, Any]:
        response = client.post("/v1/predictions", json=payload)
        body = response.json()
        if response.status_code != 201 or body.get("status") != "succeeded":
            raise RuntimeError(f"{slug}: HTTP {response.status_code} {orjson.dumps(body)[:300]!r}")
        return dict(body)

    first_s, _ = timed(one)
    predict, e2e = [], []
    for _ in range(runs):
        elapsed, body = timed(one)
        e2e.append(elapsed)
        predict.append(float(body["metrics"]["predict_time"]))
    return {
        "first_e2e_ms": round(first_s * 1000, 1),
        "predict_p50_ms": round(statistics.median(predict) * 1000, 1),
        "predict_max_ms": round(max(predict) * 1000, 1),
        "e2e_p50_ms": round(statistics.median(e2e) * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed predictions per model (after 1 warm-up)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="predictd-bench-models-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        env = clean_env(data_dir, port)
        env["PREDICTD_LOG_LEVEL"] = "info"  # the "worker ready" lines carry each model's setup_time
        key = mint_key(data_dir, env)
        log_path = Path(tmp) / "server.log"
        base_url = f"http://{HOST}:{port}"
        proc = start_server(env, log_path)
        try:
            healthy_s = wait_healthy(proc, base_url, log_path)
            ready = {m["model"]: m for m in READY.finditer(log_path.read_text(errors="replace"))}
            inputs = inputs_by_model()
            rows = []
            with httpx.Client(base_url=base_url, headers={"x-api-key": key}, timeout=REQUEST_TIMEOUT_S) as c:
                for model in BUILTIN_MODELS:
                    slug = str(model["slug"])
                    row: dict[str, Any] = {"model": slug}
                    if slug in ready:
                        row["load_s"] = float(ready[slug]["setup"])
                    row.update(bench_model(c, slug, inputs[slug], args.runs))
                    if slug in ready:
                        try:
                            rss = psutil.Process(int(ready[slug]["pid"])).memory_info().rss
                            row["worker_rss_mib"] = round(rss / 2**20, 1)
                        except psutil.NoSuchProcess:
                            pass
                    rows.append(row)
        finally:
            notes = stop_server(proc)
    result = {"server_healthy_s": round(healthy_s, 2), "runs": args.runs, "models": rows, "notes": notes}
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"server healthy after {healthy_s:.2f} s (all workers loaded); {args.runs} runs per model")
    columns = ("model", "load_s", "worker_rss_mib", "first_e2e_ms", "predict_p50_ms", "predict_max_ms")
    columns += ("e2e_p50_ms",)
    widths = [max(len(c), *(len(str(r.get(c, "-"))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row.get(c, "-")).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
