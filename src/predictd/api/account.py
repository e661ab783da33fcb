"""The caller's own account: plan, credits, ledger (native ``/v1/account``, FASHN-style ``/v1/credits``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request

from ..core.domain import LedgerEntry, Plan, Principal, from_micros
from ..errors import ErrorId
from . import fashn, native, parsing
from .auth import authenticated
from .native import _query
from .responses import JSONResponse
from .state import usecases_of

router = APIRouter(prefix="/v1", tags=["account"])


def plan_body(plan: Plan) -> dict[str, Any]:
    return {
        "name": plan.name,
        "models": list(plan.models),
        "rate_limit": plan.rate_limit,
        "rate_window_s": plan.rate_window_s,
        "key_rate_limit": plan.key_rate_limit,
        "concurrency_limit": plan.concurrency_limit,
        "prepaid": plan.prepaid,
        "security_screen": plan.security_screen,
    }


def entry_body(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": from_micros(entry.amount_micros),
        "prediction_id": entry.prediction_id,
        "note": entry.note,
        "created_at": entry.created_at.isoformat().replace("+00:00", "Z"),
    }


@router.get(
    "/account",
    summary="The calling account: plan, limits, credits, in-flight predictions",
    responses=native._errors(),
)
async def account(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    own = usecases_of(request).account
    credits = await own.credits(principal)
    return JSONResponse(
        {
            "id": principal.account.id,
            "name": principal.account.name,
            "status": principal.account.status.value,
            "plan": plan_body(principal.plan),
            "disabled_models": list(principal.account.disabled_models),
            "credits": credits.as_dict(),
            "in_flight": await own.in_flight(principal),
        }
    )


@router.get(
    "/account/ledger",
    summary="Credit ledger entries, newest first",
    openapi_extra={
        "parameters": [
            _query(
                "limit", "Entries to return, 1 to 500.", {"type": "integer", "minimum": 1, "maximum": 500}
            ),
            _query(
                "before",
                "Only entries with a smaller id (paging).",
                {"type": "integer", "minimum": 1, "maximum": parsing.MAX_QUERY_INT},
            ),
        ]
    },
    responses=native._errors(ErrorId.INVALID_PARAMETER),
)
async def ledger(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    limit = parsing.positive_int("limit", request.query_params.get("limit"), 50, 500)
    before = request.query_params.get("before")
    before_id = parsing.positive_int("before", before, 1) if before is not None else None
    entries = await usecases_of(request).account.ledger(principal, limit, before_id)
    return JSONResponse({"data": [entry_body(e) for e in entries]})


@router.get("/credits", summary="Credits (FASHN path)", responses=fashn._errors())
async def credits(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    balance = await usecases_of(request).account.credits(principal)
    available = from_micros(balance.available_micros)
    return JSONResponse(
        {
            "credits": {
                "total": available,
                "subscription": 0,
                "on_demand": available,
                "balance": from_micros(balance.balance_micros),
                "reserved": from_micros(balance.reserved_micros),
            }
        }
    )
