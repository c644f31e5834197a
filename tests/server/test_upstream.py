"""The upstream client against a real socket server: keep-alive expiry and the stale-connection retry."""

from __future__ import annotations

import asyncio
from typing import Callable, Iterator

import httpx
import pytest

from server.config import Settings, UpstreamSettings
from server.upstream import Upstream
from tests.server.stub import CHAT, Respond, StubUpstream, http_response
from tests.support import ThreadedServer

BODY = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}


MODELS = http_response(b'{"object": "list", "data": [{"id": "stub", "object": "model"}]}')


def closes_reused(n: int, k: int, head: bytes) -> bytes | None:
    """Answer the first request of each connection; close a reused one as its request arrives."""
    if k:
        return None
    return MODELS if head.startswith(b"GET /v1/models") else http_response(CHAT)


@pytest.fixture
def stub_gateway() -> Iterator[Callable[[Respond], tuple[StubUpstream, str]]]:
    """Start a stub upstream and a gateway in front of it."""
    stubs: list[StubUpstream] = []
    servers: list[ThreadedServer] = []

    def start(respond: Respond) -> tuple[StubUpstream, str]:
        from server.app import create_app

        stub = StubUpstream(respond)
        stubs.append(stub)
        # pass-through guard: the upstream path is under test, not the detector
        app = create_app(Settings(upstream={"url": stub.url}, guard={"enabled": False}))
        servers.append(ThreadedServer(app).start())
        return stub, servers[-1].url

    yield start
    for srv in servers:
        srv.stop()
    for stub in stubs:
        stub.close()


def test_gateway_retries_a_keepalive_connection_the_upstream_closed(stub_gateway) -> None:
    # Every request leaves its connection idle in the pool (a chat stream's body is read to its
    # end after [DONE]); the next request picks it up just as the upstream closes it.
    stub, base = stub_gateway(closes_reused)
    for stream in (True, False):
        assert httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"] == "stub"
        r = httpx.post(f"{base}/v1/chat/completions", json={**BODY, "stream": stream}, timeout=10)
        assert r.status_code == 200, r.text
        if stream:
            assert "Hello." in r.text and "upstream_failed" not in r.text and r.text.endswith("data: [DONE]\n\n")
        else:
            assert r.json()["choices"][0]["message"]["content"] == "Hello."
    assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 200
    assert httpx.get(f"{base}/v1/models", timeout=10).status_code == 200  # reused, closed, retried
    seen = [(n, k, head.split(b" ")[0].decode()) for n, k, head in stub.requests]
    assert seen == [
        (0, 0, "GET"), (0, 1, "POST"), (1, 0, "POST"),  # the chat went out on the stale one, then again
        (1, 1, "GET"), (2, 0, "GET"), (2, 1, "POST"), (3, 0, "POST"),  # the chat's connection was kept
        (3, 1, "GET"), (4, 0, "GET"), (4, 1, "GET"), (5, 0, "GET"),
    ]


def test_chat_streams_reuse_their_upstream_connection(stub_gateway) -> None:
    stub, base = stub_gateway(lambda n, k, head: http_response(CHAT))
    for stream in (True, False, True):
        r = httpx.post(f"{base}/v1/chat/completions", json={**BODY, "stream": stream}, timeout=10)
        assert r.status_code == 200 and "Hello." in r.text
    assert stub.connections == 1 and [k for _, k, _ in stub.requests] == [0, 1, 2]


def test_a_body_that_never_ends_after_done_is_not_waited_for(stub_gateway) -> None:
    # [DONE] arrives but the body promises more bytes that never come: the client's stream still
    # ends within the drain timeout, and the connection is dropped rather than reused
    stub, base = stub_gateway(lambda n, k, head: http_response(CHAT, length=len(CHAT) + 64))
    for _ in range(2):
        r = httpx.post(f"{base}/v1/chat/completions", json={**BODY, "stream": True}, timeout=5)
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n") and "error" not in r.text
    assert stub.connections == 2 and [k for _, k, _ in stub.requests] == [0, 0]


def test_no_retry_once_the_response_has_started(stub_gateway) -> None:
    # headers and one frame, then the connection drops: generation had begun, so no second request
    truncated = http_response(CHAT[: CHAT.index(b"\n\n") + 2], length=len(CHAT), close=True)
    stub, base = stub_gateway(lambda n, k, head: truncated)
    r = httpx.post(f"{base}/v1/chat/completions", json={**BODY, "stream": True}, timeout=10)
    assert r.status_code == 200 and "upstream_failed" in r.text and r.text.endswith("data: [DONE]\n\n")
    r = httpx.post(f"{base}/v1/chat/completions", json=BODY, timeout=10)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
    assert len(stub.requests) == 2


def test_upstream_that_never_answers_fails_after_one_retry() -> None:
    stub = StubUpstream(lambda n, k, head: None)
    upstream = Upstream(UpstreamSettings(url=stub.url))

    async def run() -> int:
        try:
            await upstream.open_chat(BODY, request_id="r1")
        except Exception as exc:
            return getattr(exc, "status", 0)
        finally:
            await upstream.aclose()
        return 200

    assert asyncio.run(run()) == 502
    assert len(stub.requests) == 2  # the request and its one retry
    stub.close()


@pytest.mark.parametrize("expiry,connections", [(0.1, 2), (2.0, 1)])
def test_idle_connections_expire_after_keepalive_expiry(expiry: float, connections: int) -> None:
    stub = StubUpstream(lambda n, k, head: http_response(b'{"data": []}'))
    upstream = Upstream(UpstreamSettings(url=stub.url, keepalive_expiry=expiry))

    async def run() -> None:
        await upstream.models()
        await asyncio.sleep(0.3)
        await upstream.models()
        await upstream.aclose()

    asyncio.run(run())
    assert stub.connections == connections and len(stub.requests) == 2
    stub.close()


def test_keepalive_expiry_setting_defaults_below_uvicorns_keepalive() -> None:
    assert UpstreamSettings().keepalive_expiry == 2.0 < 5.0
    assert Settings(upstream={"keepalive_expiry": 0.5}).upstream.keepalive_expiry == 0.5
