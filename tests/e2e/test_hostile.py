"""Hostile and malformed requests: precise 4xx in the OpenAI shape, never a 5xx, server keeps serving."""

from __future__ import annotations

import threading
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
    base = gateway_factory(auth={"api_keys": ["key-one", "key-two"], "max_concurrency_per_key": 1})
    body = {"model": served_model, "messages": user_message(CONVERSATIONS["benign"]), "temperature": 0}
    assert_error(post(base, body), 401, code="invalid_api_key")
    assert_error(post(base, body, headers={"Authorization": "Bearer wrong"}), 401, code="invalid_api_key")
    ok = openai.OpenAI(base_url=f"{base}/v1", api_key="key-one", max_retries=0)
    assert ok.chat.completions.create(**body).choices[0].message.content

    # hold key-one's only slot with a long stream, then a second request with the same key gets 429
    long_body = {**body, "max_tokens": 1800, "ignore_eos": True, "stream": True}
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=long_body,
                          headers={"Authorization": "Bearer key-one"}, timeout=120) as r:
            next(r.iter_lines())
            started.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert started.wait(60)
        r = post(base, body, headers={"Authorization": "Bearer key-one"})
        assert_error(r, 429, code="concurrency_limit")
        assert r.headers["retry-after"] == "1"
        # another key is not affected
        assert post(base, body, headers={"Authorization": "Bearer key-two"}).status_code == 200
    finally:
        release.set()
        t.join(60)
    assert post(base, body, headers={"Authorization": "Bearer key-one"}).status_code == 200


def test_unknown_model_is_passed_through_as_404(gateway_url: str) -> None:
    r = post(gateway_url, {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["message"]
