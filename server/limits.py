"""Limits on what a client may send, enforced before anything is parsed or forwarded."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api import ChatCompletionRequest
from server.config import LimitSettings
from server.errors import APIError, error_body, validation_error


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: refuse bodies over the cap (413) by header and while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps(
            error_body(f"request body is larger than {self.max_bytes} bytes", type="invalid_request_error",
                       code="request_too_large")
        ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# OpenAI fields this gateway cannot serve safely: the guard checks text, not tool calls or audio
UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "parallel_tool_calls": "tool calling",
    "audio": "audio output",
    "modalities": "output modalities",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "prediction": "predicted outputs",
}


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping early once past ``limit``."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


async def read_chat_request(request: Request, limits: LimitSettings) -> ChatCompletionRequest:
    try:
        raw = await request.body()
    except ClientDisconnect as exc:
        raise APIError(400, "client disconnected while sending the body") from exc
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise APIError(400, "request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    if _depth(data, limits.max_json_depth) > limits.max_json_depth:
        raise APIError(400, f"JSON nesting is deeper than {limits.max_json_depth}", code="json_too_deep")
    for key, what in UNSUPPORTED.items():
        if key in data:
            raise APIError(400, f"{key}: {what} is not supported by this gateway", param=key, code="unsupported_parameter")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc
    if len(req.messages) > limits.max_messages:
        raise APIError(400, f"at most {limits.max_messages} messages", param="messages", code="too_many_messages")
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list) and len(m.content) > limits.max_content_parts:
            raise APIError(400, f"at most {limits.max_content_parts} content parts per message",
                           param=f"messages[{i}].content", code="too_many_parts")
    for field in ("max_tokens", "max_completion_tokens"):
        value = getattr(req, field)
        if value is not None and value > limits.max_tokens:
            raise APIError(400, f"{field} must be at most {limits.max_tokens}", param=field, code="max_tokens_too_large")
    return req
