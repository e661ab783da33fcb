"""Operator endpoints under ``/admin/v1``, behind the deployment's admin key (never an account's key)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request

from ..core.domain import Plan
from ..errors import ApiError, ErrorId
from ..usecases.administration import Administration
from . import parsing
from .auth import presented_key
from .responses import JSONResponse
from .state import deployment_of

router = APIRouter(prefix="/admin/v1", tags=["administration"])


async def administration(request: Request) -> Administration:
    configured = deployment_of(request).settings.admin_key
    presented = presented_key(request) or ""
    if configured is None:
        raise ApiError(ErrorId.UNAUTHORIZED, "The admin API is disabled: set admin_key (PREDICTD_ADMIN_KEY).")
    if not hmac.compare_digest(presented.encode(), configured.encode()):
        raise ApiError(ErrorId.UNAUTHORIZED, "The admin API needs the deployment's admin key.")
    return deployment_of(request).usecases.administration


async def _json(request: Request) -> dict[str, Any]:
    parsing.require_json_content_type(request.headers.get("content-type"))
    return parsing.parse_json_object(await request.body())


@router.get("/accounts")
async def list_accounts(admin: Administration = Depends(administration)) -> JSONResponse:
    return JSONResponse({"data": [a.as_dict() for a in await admin.list_accounts()]})


@router.post("/accounts", status_code=201)
async def create_account(request: Request, admin: Administration = Depends(administration)) -> JSONResponse:
    body = await _json(request)
    parsing.require_fields(body, "name")
    name = parsing.expect_type(body, "name", str, "a string")
    plan = parsing.expect_type(body, "plan", str, "a plan name")
    return JSONResponse((await admin.create_account(name, plan)).as_dict(), status_code=201)


@router.get("/accounts/{name}")
async def get_account(name: str, admin: Administration = Depends(administration)) -> JSONResponse:
    found = await admin.credits(name)
    return JSONResponse({**found.account.as_dict(), "credits": found.credits.as_dict()})


@router.post("/accounts/{name}/keys", status_code=201)
async def create_key(
    name: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    label = parsing.expect_type(body, "label", str, "a string") or "admin"
    issued = await admin.issue_key(name, label)
    return JSONResponse({"id": issued.key_id, "key": issued.secret, "account": name}, status_code=201)


@router.post("/accounts/{name}/suspend")
async def suspend(
    name: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    reason = parsing.expect_type(body, "reason", str, "a string")
    return JSONResponse((await admin.set_status(name, True, reason)).as_dict())


@router.post("/accounts/{name}/unsuspend")
async def unsuspend(name: str, admin: Administration = Depends(administration)) -> JSONResponse:
    return JSONResponse((await admin.set_status(name, False)).as_dict())


@router.put("/accounts/{name}/plan")
async def set_plan(
    name: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    plan = parsing.expect_type(body, "plan", str, "a plan name or null")
    return JSONResponse((await admin.set_plan(name, plan)).as_dict())


@router.put("/accounts/{name}/models/{model}")
async def set_model(
    name: str, model: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    parsing.require_fields(body, "enabled")
    enabled = parsing.expect_type(body, "enabled", bool, "true or false")
    return JSONResponse((await admin.set_model_enabled(name, model, enabled)).as_dict())


@router.post("/accounts/{name}/credits")
async def add_credits(
    name: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    parsing.require_fields(body, "amount")
    amount = parsing.expect_type(body, "amount", (int, float), "a number")
    kind = parsing.expect_type(body, "kind", str, "'grant' or 'adjust'") or "grant"
    note = parsing.expect_type(body, "note", str, "a string")
    credits = await admin.add_credits(name, float(amount), kind, note)
    return JSONResponse({"account": name, "credits": credits.as_dict()})


@router.get("/plans")
async def list_plans(admin: Administration = Depends(administration)) -> JSONResponse:
    return JSONResponse({"data": [p.as_dict() for p in await admin.list_plans()]})


@router.put("/plans/{name}")
async def put_plan(
    name: str, request: Request, admin: Administration = Depends(administration)
) -> JSONResponse:
    body = await _json(request)
    parsing.reject_unknown_fields(
        body,
        frozenset(
            {
                "models",
                "rate_limit",
                "rate_window_s",
                "key_rate_limit",
                "concurrency_limit",
                "prepaid",
                "security_screen",
            }
        ),
    )
    models = body.get("models", ["*"])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ApiError(ErrorId.INVALID_INPUT, "Field 'models' must be a list of model slugs (or ['*']).")
    plan = Plan(
        name=name,
        models=tuple(models),
        rate_limit=parsing.expect_type(body, "rate_limit", int, "an integer"),
        rate_window_s=float(parsing.expect_type(body, "rate_window_s", (int, float), "a number") or 60.0),
        key_rate_limit=parsing.expect_type(body, "key_rate_limit", int, "an integer"),
        concurrency_limit=parsing.expect_type(body, "concurrency_limit", int, "an integer"),
        prepaid=bool(parsing.expect_type(body, "prepaid", bool, "true or false")),
        security_screen=parsing.expect_type(body, "security_screen", bool, "true or false") is not False,
    )
    return JSONResponse((await admin.put_plan(plan)).as_dict())
