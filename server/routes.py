"""HTTP routes: chat completions, models, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guard.events import Stage
from guard.verdict import Reading, Release, Verdict
from server.api import ErrorResponse, chat_request_openapi
from server.completion import End, Failure, Flush, GuardedCompletion, KeepAlive, collect, extension
from server.errors import APIError, error_body
from server.limits import read_chat_request
from server.sse import DONE, KEEPALIVE, ChunkWriter, usage_dict
from server.state import AppState, Timings, record

router = APIRouter()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ERRORS = {400: {"model": ErrorResponse}, 502: {"model": ErrorResponse}}


def _state(request: Request) -> AppState:
    return request.app.state.tg


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


@router.post("/v1/chat/completions", responses=_ERRORS, openapi_extra=chat_request_openapi())
async def chat_completions(request: Request) -> Response:
    state = _state(request)
    rid = _request_id(request)
    started = time.perf_counter()
    headers = {"X-Request-Id": rid}
    try:
        who = state.auth.authenticate(request)
        body = await read_chat_request(request, state.settings.limits)
        if body.thoughtguard is not None and body.thoughtguard.debug:
            state.auth.require_inspector(who, param="thoughtguard")
            state.guardrail.policy_named(body.thoughtguard.policy)
        state.auth.acquire(who)
    except APIError as exc:
        state.metrics.requests.labels("unknown", "client_error").inc()
        exc.headers = {**(exc.headers or {}), **headers}
        raise
    completion = GuardedCompletion(state.upstream, state.guardrail, body, rid)
    state.metrics.in_flight.labels(body.model).inc()
    streaming = False
    try:
        completion.images = await state.images.resolve(body)
        state.metrics.observe_images(body.model, completion.images)
        guard = state.settings.guard
        if guard.enabled and guard.prompt_check and await completion.check_prompt():
            blocked = completion.prompt_blocked
            if blocked is not None and guard.prompt_block_response == "error":
                raise APIError(400, "the request was refused by the content policy", code="content_filter",
                               param="messages")
        if completion.prompt_blocked is None:
            await completion.open()
        if body.stream:
            streaming = True
            return StreamingResponse(
                _sse(state, completion, started, who), media_type="text/event-stream", headers=headers
            )
        choice = await collect(completion)
    except APIError as exc:
        outcome = "upstream_error" if exc.status >= 500 else "client_error"
        if exc.code == "content_filter":
            outcome = "blocked"
        if exc.code and exc.code.startswith("image_"):
            state.metrics.image_rejections.labels(body.model, exc.code.removeprefix("image_")).inc()
        record(state, completion, outcome, started)
        exc.headers = {**(exc.headers or {}), **headers}
        raise
    finally:
        if not streaming:
            state.metrics.in_flight.labels(body.model).dec()
            state.auth.release(who)
    record(state, completion, None, started)
    return JSONResponse(
        {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [choice],
            "usage": usage_dict(completion.usage),
        },
        headers=headers,
    )


async def _sse(state: AppState, completion: GuardedCompletion, started: float, who: str) -> AsyncIterator[bytes]:
    writer = ChunkWriter(f"chatcmpl-{completion.request_id}", completion.model)
    flags: list[Verdict] = []
    answered = False
    outcome: str | None = None
    timings = Timings()
    # frames wait in ``out`` until the upstream read that produced them is done (Flush), so a busy
    # stream's chunks go out in one write, not one each
    out: list[bytes] = []
    try:
        yield writer.role()
        async for step in completion.steps(keepalive_s=state.settings.sse_keepalive_s):
            if isinstance(step, Flush):
                if out:
                    yield b"".join(out)
                    out.clear()
            elif isinstance(step, KeepAlive):
                out.append(KEEPALIVE)
                yield b"".join(out)
                out.clear()
            elif isinstance(step, Reading):
                out.append(writer.reading(step))
            elif isinstance(step, Release):
                is_answer = step.stage is Stage.ANSWER
                answered = answered or is_answer
                timings.sent(time.perf_counter(), answer=is_answer)
                out.append(writer.text(step.stage, step.text))
            elif isinstance(step, Verdict):
                flags.append(step)
            elif isinstance(step, End):
                ext = extension(step, flags)
                content = None
                if step.refusal is not None:
                    content = f"\n\n{step.refusal}" if answered else step.refusal
                out.append(writer.finish(step.finish_reason, content=content, extension=ext))
            elif isinstance(step, Failure):
                outcome = "upstream_error"
                out.append(writer.error(step.message, type="upstream_error", code="upstream_failed"))
        if completion.request.include_usage:
            out.append(writer.usage(completion.usage))
        out.append(DONE)
        yield b"".join(out)
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        raise
    finally:
        await completion.aclose()
        state.auth.release(who)
        state.metrics.in_flight.labels(completion.model).dec()
        record(state, completion, outcome, started, timings)


@router.get("/v1/models")
async def models(request: Request) -> JSONResponse:
    return JSONResponse(await _state(request).upstream.models())


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    if await _state(request).upstream.ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        error_body("upstream is not answering", type="upstream_error", code="upstream_unavailable"), status_code=503
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(_state(request).metrics.exposition), media_type=CONTENT_TYPE_LATEST)
