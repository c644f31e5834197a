"""The upstream model server, reached with one pooled httpx client.

Chat completions are always requested as streams, even for non-streaming clients, so the
guard can stop a generation early: closing the response closes the connection, and vLLM aborts
the request when its client goes away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

import anyio
import httpx
import msgspec

from guard.events import Event, Finish, Stage, TextDelta, Usage
from server.config import UpstreamSettings
from server.errors import APIError
from server.thinksplit import ThinkSplitter


log = logging.getLogger("thoughtguard")

# transport failures that leave a request unanswered: nothing was generated, a retry is safe
_UNANSWERED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _unanswered(exc: httpx.HTTPError) -> bool:
    if isinstance(exc, _UNANSWERED):
        return True
    # through aiohttp, a pooled connection the upstream had closed surfaces as a disconnect or a
    # reset (httpx-aiohttp maps both to ConnectTimeout, which a real connect timeout also is)
    import aiohttp

    return isinstance(exc.__cause__, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))


class UpstreamUnavailable(APIError):
    def __init__(self, detail: str) -> None:
        super().__init__(502, f"upstream unavailable: {detail}", type="upstream_error", code="upstream_unavailable")


class SSEFrames:
    """Server-sent events from raw bytes: the ``data`` of each event, as bytes, in order.

    Bytes arrive as the socket delivers them: an event may be split across reads and one read
    may hold several. Events end at a blank line (LF, CRLF or CR line ends); lines starting with
    ``:`` are comments and other fields (``event:``, ``id:``) are ignored; several ``data:``
    lines of one event are joined with ``\n``. An event without data yields nothing, and an
    unterminated one is still read when the stream ends (:meth:`close`). Splitting bytes, not
    decoded text lines, never cuts a JSON string at a Unicode line break (U+2028, U+2029,
    U+0085) that the upstream writes raw; httpx's ``aiter_lines`` does, and the chunk then
    fails to parse.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, raw: bytes) -> list[bytes]:
        buf = self._buf + raw if self._buf else raw
        if b"\r" in buf:
            # CRLF and CR to LF; a CR at the end waits, since the LF of its CRLF may come next
            keep = buf.endswith(b"\r")
            buf = buf[:-1] if keep else buf
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if keep else b"")
        *events, self._buf = buf.split(b"\n\n")
        return [data for data in map(_event_data, events) if data is not None]

    def close(self) -> list[bytes]:
        """The stream ended: an event still open counts as ended too."""
        out = self.feed(b"\n\n")
        self._buf = b""
        return out


def _event_data(event: bytes) -> bytes | None:
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]  # the common case: one data line, as vLLM sends every chunk
    data = [
        line[6:] if line.startswith(b"data: ") else line[5:]
        for line in event.split(b"\n")
        if line.startswith(b"data:") or line == b"data"
    ]
    return b"\n".join(data) if data else None


class _Delta(msgspec.Struct):
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Details(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_details: _Details | None = None


class _Chunk(msgspec.Struct):
    """The fields of a ``chat.completion.chunk`` the gateway reads; the rest is skipped unparsed."""

    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


# typed decoding builds only these objects (the parse was 19 % of a busy gateway's CPU with json.loads)
_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def parse_chunk(data: bytes) -> _Chunk:
    try:
        return _decode_chunk(data)
    except msgspec.DecodeError as exc:  # malformed or mistyped: the stream's failure, as json.loads' was
        raise ValueError(f"bad upstream chunk: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ReadEnd:
    """Every event of one network read has been yielded: the moment to write what they released
    to the client as one write (a busy stream's read holds several chunks)."""


READ_END = ReadEnd()


@dataclass
class UpstreamStream:
    """One open streaming response; iterate :meth:`events`, then (or instead) :meth:`aclose`."""

    response: httpx.Response
    splitter: ThinkSplitter
    model: str | None = None
    # the server runs a reasoning parser: its content is answer text, never to be split again
    parsed_reasoning: bool = False
    drain_s: float = 0.0  # see UpstreamSettings.body_end_timeout_s

    async def events(self) -> AsyncIterator[Event | ReadEnd]:
        frames = self._data()
        async for data in frames:
            if data is None:
                yield READ_END
                continue
            if data.strip() == b"[DONE]":
                await self._drain(frames)
                break
            chunk = parse_chunk(data)
            if chunk.error is not None:
                err = chunk.error
                raise UpstreamUnavailable(str(err.get("message", err) if isinstance(err, dict) else err)[:500])
            self.model = chunk.model or self.model
            for event in self._chunk_events(chunk):
                yield event
        for delta in self.splitter.flush():
            yield delta

    async def _drain(self, frames: AsyncIterator[bytes | None]) -> None:
        """Read the body's end after ``[DONE]`` (vLLM sends nothing more), so the pool can reuse
        the connection: one closed before its body is read to the end is thrown away, and the
        next request pays a new TCP handshake. An upstream that sends on, or never ends the body,
        gets ``drain_s`` and then its connection is closed as before."""
        if self.drain_s <= 0:
            return
        with anyio.move_on_after(self.drain_s):
            async for _ in frames:
                pass

    async def _data(self) -> AsyncIterator[bytes | None]:
        """The data of each server-sent event, read off the response as its bytes arrive; None
        after the last event of each read."""
        frames = SSEFrames()
        async for raw in self.response.aiter_bytes():
            got = frames.feed(raw)
            for data in got:
                yield data
            if got:
                yield None
        for data in frames.close():
            yield data

    def _chunk_events(self, chunk: _Chunk) -> list[Event]:
        out: list[Event] = []
        for choice in chunk.choices or ():
            delta = choice.delta
            if delta is not None:
                thought = delta.reasoning or delta.reasoning_content
                if thought:
                    self.parsed_reasoning = True
                    out.append(TextDelta(Stage.REASONING, thought))
                content = delta.content
                if content:
                    if self.parsed_reasoning:
                        out.append(TextDelta(Stage.ANSWER, content))
                    else:
                        out.extend(self.splitter.feed(content))
            if choice.finish_reason:
                out.extend(self.splitter.flush())
                out.append(Finish(choice.finish_reason))
        usage = chunk.usage
        if usage is not None:
            details = usage.completion_tokens_details
            out.append(
                Usage(
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    reasoning_tokens=details.reasoning_tokens if details is not None else None,
                )
            )
        return out

    async def aclose(self) -> None:
        await self.response.aclose()


class Upstream:
    def __init__(self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=settings.keepalive_expiry,
        )
        if transport is None and settings.transport == "aiohttp":
            # the profile's top cost was httpcore/h11 parsing each one-token chunk in Python
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits)
        self.client = httpx.AsyncClient(
            base_url=settings.url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            limits=limits,
            transport=transport,
        )

    async def open_chat(self, payload: dict[str, Any], *, request_id: str, implicit_think: bool | None = None) -> UpstreamStream:
        request = self.client.build_request(
            "POST", "chat/completions", json=payload, headers={"X-Request-Id": request_id}
        )
        response = await self._send(request, stream=True)
        if response.status_code >= 400:
            await self._raise_for_status(response)
        think = self.settings.implicit_think if implicit_think is None else implicit_think
        return UpstreamStream(response, ThinkSplitter(implicit_open=think), drain_s=self.settings.body_end_timeout_s)

    async def complete(self, prompt: str, *, model: str | None, max_tokens: int = 16) -> str:
        """Raw-text completion (the guard-model tier)."""
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if model:
            body["model"] = model
        response = await self._send(self.client.build_request("POST", "completions", json=body))
        if response.status_code >= 400:
            await self._raise_for_status(response)
        return response.json()["choices"][0]["text"]

    async def models(self) -> dict[str, Any]:
        request = self.client.build_request("GET", "models", timeout=self.settings.connect_timeout_s)
        response = await self._send(request)
        if response.status_code >= 400:
            await self._raise_for_status(response)
        return response.json()

    async def ready(self) -> bool:
        try:
            await self.models()
        except APIError:
            return False
        return True

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send, retrying once when the connection failed before any response header arrived.

        That is the stale keep-alive race: the pool hands out an idle connection just as the
        upstream closes it, and the request dies unanswered. Nothing was generated, so the one
        retry (on a fresh connection: the pool drops the dead one) is safe. Once headers are in,
        :meth:`send` has returned and nothing is ever retried: a stream that breaks later is the
        caller's error to report.
        """
        try:
            try:
                return await self.client.send(request, stream=stream)
            except httpx.HTTPError as exc:
                if not _unanswered(exc):
                    raise
                log.info("upstream %s %s failed before a response (%r); retrying once", request.method, request.url.path, exc)
                return await self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(type(exc).__name__) from exc

    async def _raise_for_status(self, response: httpx.Response) -> None:
        await response.aread()
        await response.aclose()
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"status {response.status_code}")
        try:
            err = response.json()["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
        except (ValueError, KeyError, TypeError):
            err, message = {}, response.text[:500]
        raise APIError(
            response.status_code,
            message or f"upstream rejected the request ({response.status_code})",
            type=(err.get("type") if isinstance(err, dict) else None) or "invalid_request_error",
            param=err.get("param") if isinstance(err, dict) else None,
            code=err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), str) else None,
        )

    async def aclose(self) -> None:
        await self.client.aclose()
