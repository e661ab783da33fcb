"""The web console under ``/console``: sign in with an API key; predictions, a playground, keys, credits.

Server-rendered Jinja2 pages (autoescaped) and one small script for the playground and live progress.

Security:

* Signing in posts the key once; the server checks it, then sets an HttpOnly, SameSite=Strict cookie that
  holds only a random session token (see ``sessions.py``). The key is never sent back, stored in the
  browser, or kept by the server (only its digest, which the store already has). Attempts are counted per
  client address and per presented key (``Access.sign_in``): guessing and flooding sign-ins cost.
* Every state-changing console request is a POST that must carry the session's CSRF token (form field
  ``csrf`` or header ``x-csrf-token``) and, when the browser sends one, an ``Origin`` of this host. API
  routes accept the cookie on GET only (``auth.authenticated``), so the console's EventSource can follow
  ``/v1/predictions/{id}/stream`` while no forged request can change anything through the API.
* Signed-in pages and posts count against the plan's rate limits, as API requests do.
* Pages are sent with a strict Content-Security-Policy (scripts and styles from this origin only, no
  inline script), ``frame-ancestors 'none'`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import functools
import hmac
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..core import keys as api_keys
from ..core.domain import NATIVE_STATUS, Prediction, Principal, Status, from_micros, utcnow
from ..core.json_values import strings_in
from ..core.nul import nul_path
from ..core.schema_marks import MEDIA_KEY, MODERATE_KEY
from ..errors import API_ERRORS, ApiError, ErrorId
from ..usecases.admission import SubmitRequest
from . import parsing
from .auth import caller_region, client_address, count_request
from .native import error_response, prediction_body
from .responses import JSONResponse, retry_headers
from .sessions import COOKIE_NAME, SESSION_TTL_S, ConsoleSession, console_principal, sessions_of
from .snippets import Snippet, no_snippets, snippets
from .state import request_id_of, usecases_of

if TYPE_CHECKING:
    from jinja2 import Environment

router = APIRouter(prefix="/console", include_in_schema=False)

HERE = Path(__file__).resolve().parent / "console_templates"
STATIC_FILES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
PER_PAGE = 20
LEDGER_PAGE = 50
USAGE_DAYS = 14
MAX_LABEL = 100
# Statuses a person filters by: the native surface's vocabulary ("failed" includes timed out).
STATUS_FILTERS: dict[str, frozenset[Status]] = {}
for _internal, _shown in NATIVE_STATUS.items():
    STATUS_FILTERS[_shown] = STATUS_FILTERS.get(_shown, frozenset()) | {_internal}
IMAGE_DATA_URI = ("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/webp;base64,")


# -- rendering -----------------------------------------------------------------------------------------------


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _shorten(value: Any, limit: int = 120) -> Any:
    """A copy for display: data URIs (and other very long strings) cut to a readable length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value):,} characters)"
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _shorten(v, limit) for k, v in value.items()}
    return value


def _pretty(value: Any) -> str:
    return orjson.dumps(_shorten(value), option=orjson.OPT_INDENT_2).decode()


@functools.cache
def _templates() -> Environment:
    """The Jinja2 environment, made on the first console page: a server nobody opens the console of never
    loads Jinja2 (about 2 MiB)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(HERE),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, seconds=_seconds, number=_number, pretty=_pretty)
    return env


@dataclass(frozen=True, slots=True)
class Signed:
    principal: Principal
    session: ConsoleSession


def _html(
    request: Request,
    template: str,
    signed: Signed | None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    body = (
        _templates()
        .get_template(template)
        .render(
            account=signed.principal.account if signed else None,
            csrf_token=signed.session.csrf_token if signed else "",
            **context,
        )
    )
    return Response(
        body,
        status_code=status_code,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _error_page(request: Request, signed: Signed | None, error: ApiError) -> Response:
    spec = API_ERRORS[error.error_id]
    return _html(
        request,
        "error.html",
        signed,
        status_code=spec.http_status,
        headers=retry_headers(error),
        error_id=spec.wire_error_id.value,
        message=error.message,
    )


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path on this host, never another site."""
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value:
        return value
    return "/console/predictions"


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = urllib.parse.urlencode({"next": target})
    return RedirectResponse(f"/console/login?{query}", status_code=303, headers=SECURITY_HEADERS)


async def _signed_in(request: Request) -> Signed | None:
    found = await console_principal(request)
    return Signed(*found) if found else None


Body = Callable[[Signed], Awaitable[Response]]


async def _page(request: Request, body: Body) -> Response:
    """A signed-in GET page: the sign-in form without a session, an error page for catalog errors. Each
    counts against the plan's rate limits, as an API request does."""
    try:
        signed = await _signed_in(request)
    except ApiError as exc:  # ACCOUNT_SUSPENDED
        return _error_page(request, None, exc)
    if signed is None:
        return _to_login(request)
    try:
        await count_request(request, signed.principal)
        return await body(signed)
    except ApiError as exc:
        return _error_page(request, signed, exc)


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on every POST; when there is one it must name this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser: the CSRF token still has to match
    host = request.headers.get("host", "")
    return bool(host) and urllib.parse.urlsplit(origin).netloc == host


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(ErrorId.UNSUPPORTED_MEDIA_TYPE, "Send the form as application/x-www-form-urlencoded.")
    parsed = urllib.parse.parse_qs(
        (await request.body()).decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=20
    )
    form = {name: values[0] for name, values in parsed.items()}
    where = nul_path(form)
    if where is not None:
        raise ApiError(ErrorId.INVALID_INPUT, f"Form field {where!r} contains {parsing.NUL_REFUSED}.")
    return form


def _forbidden(request: Request, signed: Signed | None, why: str) -> Response:
    return _html(request, "error.html", signed, status_code=403, error_id="FORBIDDEN", message=why)


async def _post(
    request: Request,
    body: Callable[[Signed, dict[str, str]], Awaitable[Response]],
    *,
    counted: bool = True,
) -> Response:
    """A signed-in form POST: same origin, and the session's CSRF token in the form. ``counted``: it counts
    against the plan's rate limits, as an API request does."""
    if not _same_origin(request):
        return _forbidden(request, None, "Cross-origin form posts are refused.")
    try:
        signed = await _signed_in(request)
        if signed is None:
            return _to_login(request)
        form = await _form(request)
    except ApiError as exc:
        return _error_page(request, None, exc)
    if not hmac.compare_digest(form.get("csrf", ""), signed.session.csrf_token):
        return _forbidden(request, signed, "The form's CSRF token is missing or stale; reload the page.")
    try:
        if counted:
            await count_request(request, signed.principal)
        return await body(signed, form)
    except ApiError as exc:
        return _error_page(request, signed, exc)


# -- static files, sign-in and out ---------------------------------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise ApiError(ErrorId.NOT_FOUND, f"No console file {name!r}.")
    return Response(
        (HERE / "static" / name).read_bytes(),
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse("/console/predictions", status_code=303)


LOGIN_NOTICES = {
    "revoked": "You revoked the key you signed in with; sign in with another key.",
    "signed-out": "You are signed out.",
}


@router.get("/login")
async def login_page(request: Request) -> Response:
    return _html(
        request,
        "login.html",
        None,
        next=_safe_next(request.query_params.get("next")),
        notice=LOGIN_NOTICES.get(request.query_params.get("m", "")),
        error=None,
    )


@router.post("/login")
async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _forbidden(request, None, "Cross-origin sign-ins are refused.")
    try:
        form = await _form(request)
    except ApiError as exc:
        return _error_page(request, None, exc)
    secret = form.get("key", "").strip()
    target = _safe_next(form.get("next"))
    try:
        principal = await usecases_of(request).access.sign_in(secret, client_address(request))
    except ApiError as exc:
        return _html(
            request,
            "login.html",
            None,
            status_code=API_ERRORS[exc.error_id].http_status,
            headers=retry_headers(exc),
            next=target,
            notice=None,
            error=exc.message,
        )
    sessions = sessions_of(request)
    await sessions.close(request.cookies.get(COOKIE_NAME))  # a new sign-in never keeps an older session
    token, _ = await sessions.open(principal, api_keys.digest(secret))
    response = RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(SESSION_TTL_S),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def _signed_out(request: Request, notice: str) -> Response:
    response = RedirectResponse(f"/console/login?m={notice}", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    async def body(signed: Signed, form: dict[str, str]) -> Response:
        await sessions_of(request).close(request.cookies.get(COOKIE_NAME))
        return _signed_out(request, "signed-out")

    return await _post(request, body, counted=False)  # signing out is never refused


# -- predictions ---------------------------------------------------------------------------------------------


def _query_without(request: Request, **changes: Any) -> str:
    params = {k: v for k, v in request.query_params.items() if v}
    params.update({k: str(v) for k, v in changes.items()})
    return urllib.parse.urlencode({k: v for k, v in params.items() if v})


@router.get("/predictions")
async def predictions_page(request: Request) -> Response:
    async def body(signed: Signed) -> Response:
        query = request.query_params
        usecases = usecases_of(request)
        filters = {
            "model": query.get("model", ""),
            "status": query.get("status", ""),
            "from": query.get("from", ""),
            "to": query.get("to", ""),
        }
        error = None
        page = None
        try:
            number = parsing.positive_int("page", query.get("page") or None, 1)
            if filters["status"] and filters["status"] not in STATUS_FILTERS:
                raise ApiError(ErrorId.INVALID_PARAMETER, f"Unknown status {filters['status']!r}.")
            since, until = parsing.date_range(
                "from",
                parsing.iso_datetime("from", filters["from"]),
                "to",
                parsing.iso_datetime("to", filters["to"], end_of_day=True),
            )
            page = await usecases.predictions.list(
                signed.principal,
                page=number,
                per_page=PER_PAGE,
                model=filters["model"] or None,
                since=since,
                until=until,
                statuses=STATUS_FILTERS.get(filters["status"]),
            )
        except ApiError as exc:
            error = exc.message
        base = str(request.base_url)
        rows = [prediction_body(p, base) for p in page.items] if page else []
        return _html(
            request,
            "predictions.html",
            signed,
            nav="predictions",
            rows=rows,
            page=page,
            filters=filters,
            error=error,
            models=[m.slug for m in usecases.models.list()],
            statuses=list(STATUS_FILTERS),
            prev_query=_query_without(request, page=page.page - 1) if page and page.page > 1 else None,
            next_query=(
                _query_without(request, page=page.page + 1) if page and page.page < page.last_page else None
            ),
        )

    return await _page(request, body)


def _images(value: Any, base_url: str) -> Iterator[str]:
    """Every image in a prediction's inputs or outputs that the console may show: this server's output
    URLs and inline data URIs of raster formats (never another host, never SVG)."""
    shown = (f"{base_url}v1/outputs/", *IMAGE_DATA_URI)
    return (text for text in strings_in(value) if text.startswith(shown))


def _urls(value: Any) -> Iterator[str]:
    """Every http(s) URL in a prediction's output, to copy."""
    return (text for text in strings_in(value) if text.startswith(("http://", "https://")))


def _snippets(prediction: Prediction, base_url: str) -> list[Snippet]:
    """Code that runs the prediction again; none once its input was removed."""
    if prediction.data_removed or prediction.input is None:
        return []
    return snippets(base_url, prediction.model, prediction.input)


@router.get("/predictions/{prediction_id}")
async def prediction_page(request: Request, prediction_id: str) -> Response:
    async def body(signed: Signed) -> Response:
        own = usecases_of(request).account
        deliveries = await own.deliveries(signed.principal, prediction_id)
        prediction = await usecases_of(request).predictions.get(signed.principal, prediction_id)
        base = str(request.base_url)
        shown = prediction_body(prediction, base)
        return _html(
            request,
            "prediction.html",
            signed,
            nav="predictions",
            p=shown,
            attempts=prediction.attempts,
            input_images=list(_images(prediction.input, base)),
            output_images=list(_images(shown["output"], base)),
            output_urls=list(dict.fromkeys(_urls(shown["output"]))),
            snippets=_snippets(prediction, base),
            deliveries=deliveries,
        )

    return await _page(request, body)


@router.post("/predictions/{prediction_id}/cancel")
async def cancel_prediction(request: Request, prediction_id: str) -> Response:
    async def body(signed: Signed, form: dict[str, str]) -> Response:
        cancelled = await usecases_of(request).predictions.cancel(signed.principal, prediction_id)
        page = f"/console/predictions/{urllib.parse.quote(cancelled.id, safe='')}"
        return RedirectResponse(page, status_code=303, headers=SECURITY_HEADERS)

    return await _post(request, body)


@router.post("/predictions/{prediction_id}/rerun")
async def rerun_prediction(request: Request, prediction_id: str) -> Response:
    """Run again: a new prediction of the same model with the same input, while that input is kept (a
    failed prediction's until failed_inputs_ttl_s); admitted like any submit."""

    async def body(signed: Signed, form: dict[str, str]) -> Response:
        usecases = usecases_of(request)
        earlier = await usecases.predictions.get(signed.principal, prediction_id)
        if earlier.data_removed or earlier.input is None:
            raise ApiError(
                ErrorId.UNPROCESSABLE_ENTITY,
                f"Prediction {earlier.id!r} cannot be run again: its input was removed.",
            )
        submission = await usecases.predictions.submit(
            signed.principal,
            SubmitRequest(
                model=earlier.model, input=earlier.input, source="console", region=caller_region(request)
            ),
        )
        page = f"/console/predictions/{urllib.parse.quote(submission.prediction.id, safe='')}"
        return RedirectResponse(page, status_code=303, headers=SECURITY_HEADERS)

    return await _post(request, body)


# -- models and the playground -------------------------------------------------------------------------------


@dataclass(slots=True)
class FormField:
    name: str
    kind: str  # text | textarea | integer | number | boolean | enum | image | json
    label: str
    required: bool
    description: str = ""
    default: Any = None
    has_default: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    options: list[tuple[str, str]] = field(default_factory=list)  # (JSON value, shown)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _field(name: str, raw: dict[str, Any], required: bool, root: dict[str, Any]) -> FormField:
    schema = _resolve(raw, root)
    for union in ("anyOf", "oneOf"):
        branches = [_resolve(b, root) for b in schema.get(union, []) if isinstance(b, dict)]
        concrete = [b for b in branches if b.get("type") != "null"]
        if len(concrete) == 1:
            schema = {**concrete[0], **{k: v for k, v in schema.items() if k != union}}
    kind = "json"
    options: list[tuple[str, str]] = []
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else None)
    type_ = schema.get("type")
    if values:
        kind = "enum"
        options = [(orjson.dumps(v).decode(), str(v)) for v in values]
    elif type_ == "boolean":
        kind = "boolean"
    elif type_ in ("integer", "number"):
        kind = str(type_)
    elif type_ == "string":
        long_text = (
            (schema.get("maxLength") or 0) > 200 or MODERATE_KEY in schema or name in ("text", "prompt")
        )
        kind = "image" if schema.get(MEDIA_KEY) == "image" else "textarea" if long_text else "text"
    minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
    maximum = schema.get("maximum", schema.get("exclusiveMaximum"))
    return FormField(
        name=name,
        kind=kind,
        label=str(schema.get("title") or name.replace("_", " ").capitalize()),
        required=required,
        description=str(schema.get("description") or ""),
        default=schema.get("default"),
        has_default="default" in schema,
        minimum=minimum if isinstance(minimum, int | float) else None,
        maximum=maximum if isinstance(maximum, int | float) else None,
        max_length=schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None,
        options=options,
    )


def form_fields(schema: dict[str, Any] | None) -> list[FormField]:
    """A form for a model's input_schema: one field per property, required ones first."""
    if not schema:
        return []
    required = set(schema.get("required", []))
    fields = [
        _field(name, prop if isinstance(prop, dict) else {}, name in required, schema)
        for name, prop in schema.get("properties", {}).items()
    ]
    return sorted(fields, key=lambda f: not f.required)


@router.get("/models")
async def models_page(request: Request) -> Response:
    async def body(signed: Signed) -> Response:
        models = usecases_of(request).models.list()
        return _html(
            request, "models.html", signed, nav="playground", models=models, plan=signed.principal.plan
        )

    return await _page(request, body)


@router.get("/models/{slug}")
async def playground_page(request: Request, slug: str) -> Response:
    async def body(signed: Signed) -> Response:
        info = usecases_of(request).models.get(slug)
        return _html(
            request,
            "playground.html",
            signed,
            nav="playground",
            model=info,
            allowed=signed.principal.plan.allows(info.slug)
            and info.slug not in signed.principal.account.disabled_models,
            fields=form_fields(info.input_schema),
            snippets=no_snippets(),
        )

    return await _page(request, body)


@router.post("/models/{slug}/run")
async def run_model(request: Request, slug: str) -> Response:
    """The playground's submit (JSON in, JSON out), guarded like every console POST."""
    request_id = request_id_of(request)
    if not _same_origin(request):
        return JSONResponse({"error_id": "FORBIDDEN", "message": "Cross-origin requests are refused."}, 403)
    try:
        found = await console_principal(request)
        if found is None:
            raise ApiError(ErrorId.UNAUTHORIZED, "Your console session has ended; sign in again.")
        principal, session = found
        if not hmac.compare_digest(request.headers.get("x-csrf-token", ""), session.csrf_token):
            return JSONResponse(
                {"error_id": "FORBIDDEN", "message": "The CSRF token is missing or stale; reload the page."},
                403,
            )
        parsing.require_json_content_type(request.headers.get("content-type"))
        body = parsing.parse_json_object(await request.body())
        parsing.require_fields(body, "input")
        parsing.reject_unknown_fields(body, frozenset({"input"}))
        parsing.expect_type(body, "input", dict, "a JSON object")
        usecases = usecases_of(request)
        await count_request(request, principal)
        submission = await usecases.predictions.submit(
            principal,
            SubmitRequest(model=slug, input=body["input"], source="console", region=caller_region(request)),
        )
    except ApiError as exc:
        return error_response(exc, request_id)
    prediction = submission.prediction
    base = str(request.base_url)
    return JSONResponse(
        {
            "id": prediction.id,
            "stream": f"/v1/predictions/{prediction.id}/stream",
            "page": f"/console/predictions/{prediction.id}",
            "prediction": prediction_body(prediction, base),
            "snippets": [asdict(s) for s in _snippets(prediction, base)],
        },
        status_code=201,
    )


# -- keys ----------------------------------------------------------------------------------------------------


async def _keys_page(
    request: Request, signed: Signed, *, created: str | None = None, note: str | None = None
) -> Response:
    listed = await usecases_of(request).account.keys(signed.principal)
    return _html(
        request,
        "keys.html",
        signed,
        nav="keys",
        keys=sorted(listed, key=lambda k: (k.revoked_at is not None, -k.created_at.timestamp())),
        current_key_id=signed.principal.key_id,
        created=created,
        note=note,
    )


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    async def body(signed: Signed) -> Response:
        revoked = request.query_params.get("revoked")
        note = f"Key {revoked} revoked; it no longer works." if revoked else None
        return await _keys_page(request, signed, note=note)

    return await _page(request, body)


@router.post("/keys")
async def create_key(request: Request) -> Response:
    async def body(signed: Signed, form: dict[str, str]) -> Response:
        label = form.get("label", "").strip()[:MAX_LABEL] or "console"
        created = await usecases_of(request).account.create_key(signed.principal, label)
        # Shown in this answer only (no-store); the server keeps nothing but the digest.
        return await _keys_page(request, signed, created=created.secret)

    return await _post(request, body)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    async def body(signed: Signed, form: dict[str, str]) -> Response:
        key = await usecases_of(request).account.revoke_key(signed.principal, key_id)
        await sessions_of(request).close_key(key.id)
        if key.id == signed.principal.key_id:
            return _signed_out(request, "revoked")
        query = urllib.parse.urlencode({"revoked": key.prefix})
        return RedirectResponse(f"/console/keys?{query}", status_code=303, headers=SECURITY_HEADERS)

    return await _post(request, body)


# -- credits and usage ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: str
    day: str
    label: str  # the axis label under the bar, or ""


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    unit: str
    width: int
    height: int
    top: str  # the scale's maximum, as shown
    total: str
    bars: list[Bar]
    baseline: float


def bar_chart(title: str, unit: str, days: list[date], values: list[float]) -> Chart:
    """An inline-SVG bar chart's geometry: one bar per day, scaled to a round maximum."""
    width, height, left, bottom, top_pad = 560, 180, 36, 22, 10
    peak = max(values, default=0.0)
    scale_top = 1.0 if peak <= 0 else _round_up(peak)
    plot_h = height - bottom - top_pad
    slot = (width - left) / max(1, len(days))
    bars = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        h = plot_h * value / scale_top
        bars.append(
            Bar(
                x=round(left + index * slot + slot * 0.15, 1),
                y=round(top_pad + plot_h - h, 1),
                width=round(slot * 0.7, 1),
                height=round(h, 1),
                value=_number(value),
                day=day.isoformat(),
                label=day.strftime("%m-%d") if index % 2 == (len(days) - 1) % 2 else "",
            )
        )
    return Chart(
        title=title,
        unit=unit,
        width=width,
        height=height,
        top=_number(scale_top),
        total=_number(sum(values)),
        bars=bars,
        baseline=top_pad + plot_h,
    )


def _round_up(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``value``."""
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


@router.get("/credits")
async def credits_page(request: Request) -> Response:
    async def body(signed: Signed) -> Response:
        own = usecases_of(request).account
        raw_before = request.query_params.get("before")
        before = parsing.positive_int("before", raw_before, 1) if raw_before else None
        entries = await own.ledger(signed.principal, LEDGER_PAGE, before)
        today = utcnow().date()
        days = [today - timedelta(days=USAGE_DAYS - 1 - i) for i in range(USAGE_DAYS)]
        since = datetime.combine(days[0], time.min, tzinfo=UTC)
        usage = {u.day: u for u in await own.daily_usage(signed.principal, since)}
        counts = [float(usage[d].predictions) if d in usage else 0.0 for d in days]
        spent = [usage[d].credits if d in usage else 0.0 for d in days]
        return _html(
            request,
            "credits.html",
            signed,
            nav="credits",
            credits=(await own.credits(signed.principal)).as_dict(),
            plan=signed.principal.plan,
            entries=[
                {
                    "id": e.id,
                    "kind": e.kind,
                    "amount": from_micros(e.amount_micros),
                    "prediction_id": e.prediction_id,
                    "note": e.note,
                    "created_at": e.created_at,
                }
                for e in entries
            ],
            older=entries[-1].id if len(entries) == LEDGER_PAGE else None,
            charts=[
                bar_chart("Predictions per day", "predictions", days, counts),
                bar_chart("Credits used per day", "credits", days, spent),
            ],
            usage_days=USAGE_DAYS,
        )

    return await _page(request, body)
