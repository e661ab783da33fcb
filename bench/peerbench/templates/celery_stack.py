"""The stack people assemble instead of predictd: FastAPI + Celery + Redis (a template the peer benchmark
copies into a temporary folder and runs from its own virtual environment).

``POST /predictions`` ``{"model": "echo" | "sleep", "input": {...}}`` enqueues a Celery task and answers its
id; ``GET /predictions/{id}`` reads the task's state from the Redis result backend. The same request and
answer shapes as predictd's native surface, so that one load generator drives both. The routes are plain
``def`` functions (FastAPI runs them in its thread pool) because Celery's client calls block.
"""

import os
import time
from typing import Any

from celery import Celery
from celery.result import AsyncResult
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

REDIS_URL = os.environ["BENCH_REDIS_URL"]

celery_app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    task_default_queue=os.environ.get("BENCH_QUEUE", "celery"),
)


@celery_app.task(name="echo")
def echo(text: str) -> str:
    return text


@celery_app.task(name="sleep")
def sleep(ms: int) -> str:
    time.sleep(ms / 1000)
    return f"slept {ms} ms"


TASKS = {"echo": echo, "sleep": sleep}
STATUS = {"PENDING": "pending", "RECEIVED": "pending", "STARTED": "processing", "RETRY": "processing"}

api = FastAPI()


class Submit(BaseModel):
    model: str
    input: dict[str, Any]


@api.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@api.post("/predictions", status_code=201)
def create(body: Submit) -> dict[str, Any]:
    task = TASKS.get(body.model)
    if task is None:
        raise HTTPException(404, f"no model {body.model!r}")
    result = task.delay(**body.input)
    return {"id": result.id, "status": "pending"}


@api.get("/predictions/{task_id}")
def get(task_id: str) -> dict[str, Any]:
    result = AsyncResult(task_id, app=celery_app)
    state = result.state
    if state == "SUCCESS":
        return {"id": task_id, "status": "succeeded", "output": result.result}
    if state in ("FAILURE", "REVOKED"):
        return {"id": task_id, "status": "failed", "output": None, "error": str(result.result)}
    return {"id": task_id, "status": STATUS.get(state, "pending"), "output": None}
