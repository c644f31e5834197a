"""Hostile and malformed requests: precise 4xx in the OpenAI shape, never a 5xx, server keeps serving."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import httpx
import openai
import pytest

from tests.support import CONVERSATIONS, user_message

pytestmark = pytest.mark.vllm


def post(base: str, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60, **kw)


def assert_error(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err


@pytest.mark.parametrize(
    "patch,param",
    [
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}], "model": ""}, "model"),
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"temperature": 7}, "temperature"),
        ({"n": 3}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"stream": "yes please"}, "stream"),
        ({"stop": ["x"] * 17}, "stop"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": {}}]}]}, "messages[0].content[0]"),
        ({"thoughtguard": {"mode": "sometimes"}}, "thoughtguard.mode"),
    ],
)
def test_malformed_fields_are_precise_400s(patch: dict, param: str, gateway_url: str, served_model: str) -> None:
    body = {"model": served_model, "messages": [{"role": "user", "content": "hi"}], **patch}
    assert_error(post(gateway_url, body), 400, param=param)


def test_structure_caps(gateway_factory: Callable[..., str], served_model: str) -> None:
    base = gateway_factory(limits={"max_messages": 4, "max_body_bytes": 200_000, "max_json_depth": 8})
    many = {"model": served_model, "messages": [{"role": "user", "content": "x"}] * 5}
    assert_error(post(base, many), 400, param="messages", code="too_many_messages")
    deep: Any = "x"
    for _ in range(20):
        deep = {"a": deep}
    assert_error(post(base, {"model": served_model, "messages": [], "metadata": deep}), 400, code="json_too_deep")
    big = {"model": served_model, "messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_error(post(base, big), 413, code="request_too_large")
    for raw in [b"", b"[]", b"null", b"{", b"\xff\xfe"]:
        r = httpx.post(f"{base}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert_error(r, 400)


def test_api_keys_and_per_key_concurrency(gateway_factory: Callable[..., str], served_model: str) -> None:
    import asyncio
    import io

    from PIL import Image
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from tests.support import ThreadedServer

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 90, 0)).save(buf, format="PNG")

    async def slow_png(request: Any) -> Response:
        await asyncio.sleep(4)  # the first request holds its key's only slot while the gateway waits
        return Response(buf.getvalue(), media_type="image/png")

    images = ThreadedServer(Starlette(routes=[Route("/slow.png", slow_png)])).start()
    base = gateway_factory(
        auth={"api_keys": ["key-one", "key-two"], "max_concurrency_per_key": 1},
        images={"allow_private_hosts": True},
    )
    body = {"model": served_model, "messages": user_message(CONVERSATIONS["benign"]), "temperature": 0}
    assert_error(post(base, body), 401, code="invalid_api_key")
    assert_error(post(base, body, headers={"Authorization": "Bearer wrong"}), 401, code="invalid_api_key")
    ok = openai.OpenAI(base_url=f"{base}/v1", api_key="key-one", max_retries=0)
    assert ok.chat.completions.create(**body).choices[0].message.content

    slow = {**body, "messages": [{"role": "user", "content": [
        {"type": "text", "text": CONVERSATIONS["benign_image"]["prompt"]},
        {"type": "image_url", "image_url": {"url": f"{images.url}/slow.png"}}]}]}
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(
        post(base, slow, headers={"Authorization": "Bearer key-one"}).status_code))
    t.start()
    try:
        time.sleep(1.5)
        r = post(base, body, headers={"Authorization": "Bearer key-one"})
        assert_error(r, 429, code="concurrency_limit")
        assert r.headers["retry-after"] == "1"
        # another key is not affected
        assert post(base, body, headers={"Authorization": "Bearer key-two"}).status_code == 200
    finally:
        t.join(60)
        images.stop()
    assert results == [200]
    assert post(base, body, headers={"Authorization": "Bearer key-one"}).status_code == 200


def test_unknown_model_is_passed_through_as_404(gateway_url: str) -> None:
    r = post(gateway_url, {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["message"]
