"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, against predictd.

Everything a person does goes through the page (typing, choosing a file, clicking); the API is called with
httpx only to check what the console did (a revoked key is refused) or to set up what the console only
shows (webhook deliveries). Each test saves full-page screenshots to tests/e2e/screenshots/ (gitignored).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from predictd.store import Database

from ..conftest import FIXTURE_MODELS_TOML, Server

CHROMIUM = Path(
    "/usr/bin/chromium"
)  # Debian's package (bin/dev test installs it); never `playwright install`
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent / "screenshots"
COOKIE = "predictd_console"

WEBHOOKS_TOML = """
[webhooks]
schedule_s = [0.2, 0.3, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
attempt_timeout_s = 2
allowed_networks = ["127.0.0.1/32"]
"""


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[Server]:
    """The fixture models, and webhooks allowed to reach a receiver on 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("console")
    srv = Server(workdir=workdir, config=FIXTURE_MODELS_TOML + WEBHOOKS_TOML, backend=backend)
    srv.start()
    yield srv
    srv.destroy()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `bin/dev test` installs it (apt-get, as root)"
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    fresh = browser.new_context(viewport={"width": 1280, "height": 860})
    fresh.set_default_timeout(15_000)
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab; afterwards, no script error and no Content-Security-Policy violation may have happened."""
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    yield opened
    assert problems == []


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, server: Server, key: str) -> None:
    page.goto(f"{server.base_url}/console/")
    expect(page).to_have_url(f"{server.base_url}/console/login?next=%2Fconsole%2Fpredictions")
    page.fill("#key", key)
    page.click("#sign-in")
    expect(page).to_have_url(f"{server.base_url}/console/predictions")


def api(server: Server, key: str) -> httpx.Client:
    return server.client(key)


def photo(path: Path) -> Image.Image:
    """A photo-like JPEG: a graded sky, a sun, hills, a tree, and sensor noise."""
    width, height = 640, 480
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(70 + 120 * t), int(130 + 80 * t), int(220 - 40 * t)))
    draw.ellipse((470, 60, 560, 150), fill=(255, 220, 120))
    draw.polygon(
        [(0, 330), (160, 250), (330, 320), (480, 240), (640, 310), (640, 480), (0, 480)], fill=(60, 120, 60)
    )
    draw.rectangle((120, 300, 135, 380), fill=(90, 60, 30))
    draw.ellipse((85, 220, 170, 320), fill=(40, 100, 40))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, noise, 0.08).filter(ImageFilter.SMOOTH)
    image.save(path, "JPEG", quality=88)
    return Image.open(path)


def image_loaded(page: Page, selector: str) -> dict[str, Any]:
    locator = page.locator(selector).first
    expect(locator).to_be_visible()
    page.wait_for_function(
        "(img) => img.complete && img.naturalWidth > 0", arg=locator.element_handle(), timeout=15_000
    )
    return dict(locator.evaluate("(img) => ({w: img.naturalWidth, h: img.naturalHeight, src: img.src})"))


# -- signing in and out --------------------------------------------------------------------------------------


def test_sign_in_keeps_the_key_out_of_the_browser_and_sign_out_ends_the_session(
    console_server: Server, context: BrowserContext, page: Page
) -> None:
    key = console_server.key("signin-co")
    page.goto(f"{console_server.base_url}/console/keys")
    expect(page).to_have_url(f"{console_server.base_url}/console/login?next=%2Fconsole%2Fkeys")
    shot(page, "01-login")

    page.fill("#key", "pd_not-a-real-key")
    page.click("#sign-in")
    expect(page.locator("#login-error")).to_have_text("The API key is invalid or has been revoked.")

    page.fill("#key", key)
    page.click("#sign-in")
    expect(page).to_have_url(f"{console_server.base_url}/console/keys")  # back where it was going
    expect(page.locator("#account-name")).to_have_text("signin-co")

    cookies = [c for c in context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1
    cookie = cookies[0]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert key not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert key not in page.content()

    # The cookie opens the stream endpoint (GET) but no state-changing API route.
    with httpx.Client(base_url=console_server.base_url, cookies={COOKIE: cookie["value"]}) as browserlike:
        assert browserlike.get("/v1/account").status_code == 200
        refused = browserlike.post("/v1/predictions", json={"model": "echo", "input": {"text": "x"}})
        assert refused.status_code == 401
        assert refused.json()["error_id"] == "UNAUTHORIZED"

    page.click("#logout")
    expect(page.locator("#login-notice")).to_have_text("You are signed out.")
    page.goto(f"{console_server.base_url}/console/predictions")
    expect(page).to_have_url(f"{console_server.base_url}/console/login?next=%2Fconsole%2Fpredictions")
    with httpx.Client(base_url=console_server.base_url, cookies={COOKIE: cookie["value"]}) as stale:
        assert stale.get("/v1/account").status_code == 401


# -- the playground ------------------------------------------------------------------------------------------


def test_playground_runs_thumbnail_on_a_photo_and_shows_the_output_image(
    console_server: Server, page: Page, tmp_path: Path
) -> None:
    key = console_server.key("playground-co")
    original = photo(tmp_path / "hills.jpg")
    sign_in(page, console_server, key)

    page.click("nav >> text=Playground")
    page.click('a.tile[data-slug="thumbnail"]')
    expect(page.locator("h1")).to_contain_text("thumbnail")
    # The form comes from the input schema: a file input, a bounded number, enums as selects, a checkbox.
    assert page.get_attribute("#in-size", "min") == "1"
    assert page.get_attribute("#in-size", "max") == "512"
    assert page.locator("#in-output_format option").all_inner_texts() == ["default (png)", "png", "jpeg"]
    assert page.get_attribute("#in-return_base64", "type") == "checkbox"

    page.set_input_files("#in-image", str(tmp_path / "hills.jpg"))
    image_loaded(page, "#in-image-preview")
    page.fill("#in-size", "96")
    page.click("#run")

    expect(page.locator("#run-status")).to_have_text("succeeded")
    shown = image_loaded(page, "#run-images img.shot")
    assert (shown["w"], shown["h"]) == (96, 72)
    assert shown["src"].startswith(f"{console_server.base_url}/v1/outputs/")
    expect(page.locator("#run-credits")).to_have_text("2.5")
    shot(page, "02-playground-thumbnail")

    # The image shown is the model's thumbnail of this very photo.
    served = Image.open(BytesIO(httpx.get(shown["src"]).content)).convert("RGB")
    expected = original.convert("RGB")
    expected.thumbnail((96, 96))
    assert served.size == expected.size
    assert max(high for _, high in ImageChops.difference(served, expected).getextrema()) <= 2

    page.click("#run-link")
    expect(page.locator("#status")).to_have_text("succeeded")
    assert image_loaded(page, "img[alt='output image']")["w"] == 96
    assert image_loaded(page, "img[alt='input image']")["w"] == 640
    expect(page.locator("#credits-used")).to_have_text("2.5")
    shot(page, "03-prediction-succeeded")


def test_playground_shows_progress_live_while_the_prediction_runs(console_server: Server, page: Page) -> None:
    sign_in(page, console_server, console_server.key("progress-co"))
    page.goto(f"{console_server.base_url}/console/models/sleep")
    page.fill("#in-ms", "1500")
    page.click("#run")

    expect(page.locator("#run-status")).to_have_text("processing")
    seen_running = time.monotonic()
    assert page.locator("#run-images img").count() == 0
    shot(page, "04-playground-progress")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    assert time.monotonic() - seen_running > 0.8  # it was shown while running, not after the fact

    steps = page.eval_on_selector_all(
        "#run-log li", "items => items.map(li => [li.dataset.step, li.firstChild.textContent])"
    )
    assert [step for step, _ in steps] == ["pending", "processing", "succeeded"]
    moments = [datetime.strptime(at, "%H:%M:%S.%f") for _, at in steps]
    assert (moments[2] - moments[1]).total_seconds() >= 1.2  # each step drawn when it happened
    expect(page.locator("#run-output")).to_have_text('"slept 1500 ms"')
    assert float(page.inner_text("#run-elapsed").removesuffix(" s")) >= 1.5

    # A running prediction's own page follows it too, and shows the result when it ends.
    page.fill("#in-ms", "2000")
    page.click("#run")
    expect(page.locator("#run-status")).to_have_text("processing")
    page.click("#run-link")
    expect(page.locator("#live-status")).to_have_text("processing")
    expect(page.locator("#status")).to_have_text("succeeded")  # reloaded by the stream's "done"
    expect(page.locator("#live")).to_have_count(0)
    expect(page.locator("#output")).to_have_text('"slept 2000 ms"')


def test_a_failed_prediction_shows_its_error_name_in_the_table_and_on_its_page(
    console_server: Server, page: Page
) -> None:
    key = console_server.key("failures-co")
    with api(console_server, key) as client:
        client.post("/v1/predictions", json={"model": "echo", "input": {"text": "fine"}, "await": True})
    sign_in(page, console_server, key)
    page.goto(f"{console_server.base_url}/console/models/raises")
    page.fill("#in-kind", "pose")
    page.click("#run")
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator("#run-error-name")).to_have_text("PoseError")
    expect(page.locator("#run-error-message")).to_have_text("no person found in input.image")

    page.click("nav >> text=Predictions")
    rows = page.locator("#predictions tbody tr")
    expect(rows).to_have_count(2)
    failed = rows.filter(has_text="raises")
    expect(failed.locator(".status")).to_have_text("failed")
    expect(failed.locator(".error-name")).to_have_text("PoseError")
    expect(rows.filter(has_text="echo").locator(".error-name")).to_have_text("")

    page.select_option("#filter-status", "failed")
    page.click("#filter-apply")
    expect(page).to_have_url(f"{console_server.base_url}/console/predictions?model=&status=failed&from=&to=")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".error-name")).to_have_text("PoseError")
    shot(page, "05-predictions-failed-filter")
    page.select_option("#filter-status", "succeeded")
    page.select_option("#filter-model", "raises")
    page.click("#filter-apply")
    expect(page.locator("#predictions tbody td.empty")).to_have_text("No predictions match.")
    today = datetime.now(UTC).date().isoformat()
    page.goto(f"{console_server.base_url}/console/predictions?from={today}&to={today}&model=raises")
    expect(rows).to_have_count(1)

    rows.first.locator("a").click()
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#error-name")).to_have_text("PoseError")
    expect(page.locator("#error-message")).to_have_text("no person found in input.image")
    expect(page.locator("#credits-used")).to_have_text("0")
    expect(page.locator("#input")).to_contain_text('"kind": "pose"')  # kept, to run it again
    shot(page, "06-prediction-failed")

    first_url = page.url
    page.click("#rerun")
    expect(page).not_to_have_url(first_url)
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#error-name")).to_have_text("PoseError")
    expect(page.locator("#input")).to_contain_text('"kind": "pose"')
    page.click("nav >> text=Predictions")
    expect(rows.filter(has_text="raises")).to_have_count(2)


# -- keys ----------------------------------------------------------------------------------------------------


def test_keys_are_shown_once_listed_by_prefix_and_a_revoked_key_stops_working(
    console_server: Server, page: Page
) -> None:
    key = console_server.key("keys-co")
    sign_in(page, console_server, key)
    page.click("nav >> text=API keys")
    expect(page.locator(f'#keys tr[data-prefix="{key[:10]}"]')).to_contain_text("(this session)")

    hostile = "<img src=x onerror=\"document.title='pwned'\">"
    page.fill("#label", hostile)
    page.click("#create-key")
    secret = page.input_value("#new-key")
    assert secret.startswith("pd_")
    assert len(secret) > 40
    row = page.locator(f'#keys tr[data-prefix="{secret[:10]}"]')
    expect(row.locator("td").nth(1)).to_have_text(hostile)  # shown as text, never as markup
    assert page.title() == "API keys · predictd console"
    shot(page, "07-keys-created")
    with api(console_server, secret) as client:
        assert client.get("/v1/account").json()["name"] == "keys-co"

    page.goto(f"{console_server.base_url}/console/keys")
    expect(page.locator("#created-key")).to_have_count(0)
    assert secret not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button.danger").click()
    expect(page.locator("#keys-note")).to_have_text(f"Key {secret[:10]} revoked; it no longer works.")
    expect(row.locator(".status")).to_contain_text("revoked")
    shot(page, "08-keys-revoked")
    with api(console_server, secret) as client:
        refused = client.get("/v1/account")
    assert refused.status_code == 401
    assert refused.json()["error_id"] == "UNAUTHORIZED"
    with api(console_server, key) as client:
        assert client.get("/v1/account").status_code == 200  # the others are untouched

    # Revoking the key this session was opened with ends the session too.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'#keys tr[data-prefix="{key[:10]}"] button.danger').click()
    expect(page.locator("#login-notice")).to_contain_text("You revoked the key you signed in with")
    page.goto(f"{console_server.base_url}/console/keys")
    expect(page).to_have_url(f"{console_server.base_url}/console/login?next=%2Fconsole%2Fkeys")
    with api(console_server, key) as client:
        assert client.get("/v1/account").status_code == 401


# -- credits, usage and webhooks -----------------------------------------------------------------------------


async def _grant(db: Database, account: str, credits: float, note: str) -> None:
    owner = await db.accounts.get_account_by_name(account)
    assert owner is not None
    await db.accounts.add_ledger_entry(owner.id, "grant", round(credits * 1_000_000), note)


def test_credits_page_shows_the_balance_the_ledger_and_usage_per_day(
    console_server: Server, page: Page, tmp_path: Path
) -> None:
    key = console_server.key("credits-co")
    console_server.with_database(lambda db: _grant(db, "credits-co", 100, "welcome <credits>"))
    photo(tmp_path / "p.jpg")
    data_uri = "data:image/jpeg;base64," + base64.b64encode((tmp_path / "p.jpg").read_bytes()).decode()
    with api(console_server, key) as client:
        for model, inputs in [
            ("thumbnail", {"image": data_uri}),
            ("thumbnail", {"image": data_uri, "size": 8}),
        ]:
            body = client.post(
                "/v1/predictions", json={"model": model, "input": inputs, "await": True}
            ).json()
            assert body["status"] == "succeeded", body
        client.post("/v1/predictions", json={"model": "raises", "input": {"kind": "pose"}, "await": True})

    sign_in(page, console_server, key)
    page.click("nav >> text=Credits & usage")
    expect(page.locator("#credits-balance")).to_have_text("100")
    expect(page.locator("#credits-available")).to_have_text("100")
    ledger = page.locator("#ledger tbody tr")
    expect(ledger).to_have_count(1)
    expect(ledger.first).to_contain_text("grant")
    expect(ledger.first).to_contain_text("welcome <credits>")

    today = datetime.now(UTC).date().isoformat()
    for chart, value in [("predictions", "3"), ("credits", "5")]:
        bars = page.locator(f'figure[data-chart="{chart}"] rect.bar')
        expect(bars).to_have_count(14)
        assert bars.last.get_attribute("data-day") == today
        assert bars.last.get_attribute("data-value") == value
        assert float(bars.last.get_attribute("height") or 0) > 50
        assert {bars.nth(i).get_attribute("data-value") for i in range(13)} == {"0"}
        assert {bars.nth(i).get_attribute("height") for i in range(13)} == {"0.0"}
    shot(page, "09-credits-usage")


class _FlakyReceiver(BaseHTTPRequestHandler):
    """Answers 503 to a delivery's first attempt and 204 after, so the console has a history to show."""

    seen: dict[str, int] = {}

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        webhook_id = self.headers["webhook-id"]
        _FlakyReceiver.seen[webhook_id] = _FlakyReceiver.seen.get(webhook_id, 0) + 1
        self.send_response(503 if _FlakyReceiver.seen[webhook_id] == 1 else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_prediction_page_lists_webhook_deliveries_with_every_attempt(
    console_server: Server, page: Page
) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        key = console_server.key("hooks-co")
        hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        with api(console_server, key) as client:
            created = client.post(
                "/v1/predictions",
                json={"model": "echo", "input": {"text": "hook me"}, "webhook": {"url": hook}, "await": True},
            ).json()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                deliveries = client.get(f"/v1/predictions/{created['id']}/webhooks").json()["data"]
                if deliveries and deliveries[0]["status"] == "delivered":
                    break
                time.sleep(0.1)
        assert deliveries[0]["status"] == "delivered"

        sign_in(page, console_server, key)
        page.goto(f"{console_server.base_url}/console/predictions/{created['id']}")
        delivery = page.locator("#webhooks .delivery")
        expect(delivery).to_have_count(1)
        expect(delivery.locator(".status")).to_have_text("delivered")
        expect(delivery).to_contain_text(hook)
        attempts = delivery.locator("tbody tr")
        expect(attempts).to_have_count(2)
        expect(attempts.nth(0).locator("td").nth(2)).to_have_text("503")
        expect(attempts.nth(1).locator("td").nth(2)).to_have_text("204")
        expect(page.locator("#output")).to_have_text('"hook me"')
        shot(page, "10-prediction-webhooks")
    finally:
        receiver.shutdown()
        receiver.server_close()


# -- a phone -------------------------------------------------------------------------------------------------

PHONE = {"width": 375, "height": 740}


@pytest.fixture
def phone(browser: Browser, console_server: Server) -> Iterator[Page]:
    """A tab 375 px wide that may use the clipboard; afterwards, no script error and no CSP violation."""
    fresh = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    fresh.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_server.base_url)
    fresh.set_default_timeout(15_000)
    opened = fresh.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    opened.on(
        "console",
        lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None,
    )
    yield opened
    fresh.close()
    assert problems == []


def fits(page: Page) -> None:
    """Nothing wider than the screen: no horizontal scroll of the page itself."""
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth, document.body.scrollWidth]"
    )
    assert widths[0] <= widths[1], f"{page.url}: {widths[0]} px wide on a {widths[1]} px screen"
    assert widths[2] <= widths[1], page.url


def clipboard(page: Page) -> str:
    return str(page.evaluate("() => navigator.clipboard.readText()"))


def test_at_phone_width_the_console_fits_copies_cancels_and_shows_the_code_of_a_run(
    console_server: Server, phone: Page
) -> None:
    key = console_server.key("phone-co")
    base = console_server.base_url
    with api(console_server, key) as client:
        thumbnail = client.post(
            "/v1/predictions",
            json={
                "model": "thumbnail",
                "input": {"image": "data:image/png;base64," + base64.b64encode(_png()).decode(), "size": 8},
                "await": True,
            },
        ).json()
        assert thumbnail["status"] == "succeeded", thumbnail
        running = client.post("/v1/predictions", json={"model": "sleep", "input": {"ms": 60000}}).json()
    phone.goto(f"{base}/console/login")
    fits(phone)
    sign_in(phone, console_server, key)

    # The menu wraps under the brand: every item on screen, and it works.
    for name in ["Predictions", "Playground", "API keys", "Credits & usage"]:
        link = phone.locator(f"header nav >> text={name}")
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= PHONE["width"]
    expect(phone.locator("#logout")).to_be_visible()
    fits(phone)
    shot(phone, "11-phone-predictions")
    phone.locator("header nav >> text=Credits & usage").click()
    expect(phone).to_have_url(f"{base}/console/credits")
    fits(phone)
    phone.locator("header nav >> text=Playground").click()
    expect(phone).to_have_url(f"{base}/console/models")
    fits(phone)

    # A run in the playground shows the code that runs it again, with its model and input, never the key.
    phone.locator('a.tile[data-slug="echo"]').click()
    expect(phone.locator("#code")).to_be_hidden()
    phone.fill("#in-text", "hello from a phone")
    phone.click("#run")
    expect(phone.locator("#run-status")).to_have_text("succeeded")
    expect(phone.locator("#code")).to_be_visible()
    curl = phone.locator("#code-curl")
    expect(curl).to_contain_text('"model": "echo"')
    expect(curl).to_contain_text('"text": "hello from a phone"')
    expect(curl).to_contain_text("$PREDICTD_API_KEY")
    expect(phone.locator("#code-python")).to_be_hidden()
    phone.click('#code [data-tab="snippet-python"]')
    expect(phone.locator("#code-python")).to_be_visible()
    expect(phone.locator("#code-curl")).to_be_hidden()
    expect(phone.locator("#code-python")).to_contain_text("predictd.Client(")
    expect(phone.locator("#code-python")).to_contain_text("'text': 'hello from a phone'")
    phone.locator("#snippet-python button.copy").click()
    expect(phone.locator("#snippet-python button.copy")).to_have_text("Copied")
    assert clipboard(phone) == phone.locator("#code-python").text_content()
    assert key not in phone.content()
    fits(phone)
    shot(phone, "12-phone-playground-code")

    # A prediction's page: its id and output URL copied, its code, and nothing wider than the screen.
    phone.goto(f"{base}/console/predictions/{thumbnail['id']}")
    fits(phone)
    expect(phone.locator("#copy-id")).to_have_attribute("data-copy", thumbnail["id"])
    phone.click("#copy-id")
    expect(phone.locator("#copy-id")).to_have_text("Copied")
    expect(phone.locator("#copy-id")).to_have_class(re.compile(r"\bcopied\b"))
    assert clipboard(phone) == thumbnail["id"]
    expect(phone.locator("#copy-id")).to_have_text("Copy ID", timeout=5_000)  # back to itself
    url = thumbnail["output"]
    assert url.startswith(f"{base}/v1/outputs/")
    phone.locator(f'#output-urls button[data-copy="{url}"]').click()
    assert clipboard(phone) == url
    expect(phone.locator("#code-javascript")).to_be_hidden()
    phone.click('#code [data-tab="snippet-javascript"]')
    expect(phone.locator("#code-javascript")).to_contain_text('model: "thumbnail"')
    expect(phone.locator("#code-javascript")).to_contain_text('"size": 8')
    expect(phone.locator("#code-javascript")).to_contain_text("process.env.PREDICTD_API_KEY")
    expect(phone.locator("#code-javascript")).to_contain_text("input.image: this run's")  # left out, said so
    shot(phone, "13-phone-prediction")

    # A running prediction's page has a cancel button, which cancels it.
    phone.goto(f"{base}/console/predictions/{running['id']}")
    expect(phone.locator("#live-status")).to_have_text(re.compile("pending|processing"))
    fits(phone)
    phone.click("#cancel")
    expect(phone.locator("#status")).to_have_text("cancelled")
    expect(phone.locator("#cancel")).to_have_count(0)
    with api(console_server, key) as client:
        assert client.get(f"/v1/predictions/{running['id']}").json()["status"] == "cancelled"

    # A new key is copied from the page that shows it once.
    phone.locator("header nav >> text=API keys").click()
    phone.fill("#label", "phone")
    phone.click("#create-key")
    secret = phone.input_value("#new-key")
    fits(phone)
    shot(phone, "14-phone-keys")
    phone.click("#copy-key")
    expect(phone.locator("#copy-key")).to_have_text("Copied")
    assert clipboard(phone) == secret


def _png() -> bytes:
    """Noise, so that its data URI is longer than a code snippet carries."""
    buffer = BytesIO()
    Image.effect_noise((80, 60), 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()
