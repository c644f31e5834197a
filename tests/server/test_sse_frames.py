"""Reading the upstream's SSE from raw bytes: recorded vLLM streams over random chunkings (no server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.events import Event
from server.thinksplit import ThinkSplitter
from server.upstream import ReadEnd, SSEFrames, UpstreamStream, UpstreamUnavailable, parse_chunk

DATA = Path(__file__).parent / "data"
# recorded from vLLM 0.32 (bench/fixtures): the tiny model's reasoning deltas, SmolLM2's inline <think>
RECORDED = {p.name: p.read_bytes() for p in sorted(DATA.glob("vllm-*.sse"))}


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c


def read(chunks: list[bytes], implicit_think: bool = False) -> tuple[list[Event], str | None]:
    stream = UpstreamStream(httpx.Response(200, stream=Chunks(chunks)), ThinkSplitter(implicit_open=implicit_think))

    async def run() -> list[Event]:
        return [e async for e in stream.events() if not isinstance(e, ReadEnd)]

    return asyncio.run(run()), stream.model


def reference(body: bytes, implicit_think: bool = False) -> tuple[list[Event], str | None]:
    """What the recorded stream means, read without SSEFrames: vLLM's frames are 'data: X\\n\\n'."""
    stream = UpstreamStream(httpx.Response(200), ThinkSplitter(implicit_open=implicit_think))
    out: list[Event] = []
    for frame in body.split(b"\n\n"):
        if not frame or frame == b"data: [DONE]":
            continue
        chunk = parse_chunk(frame.removeprefix(b"data: "))
        stream.model = chunk.model or stream.model
        out += stream._chunk_events(chunk)
    return out + stream.splitter.flush(), stream.model


def cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)])]


def restyle(body: bytes, newline: bytes, comments: bool, fields: bool, multiline: bool) -> bytes:
    """The same events written as other SSE servers may: CRLF or CR line ends, comments, extra
    fields, data split over several lines (at a point where JSON allows the joining newline)."""
    out = []
    for frame in body.split(b"\n\n")[:-1]:
        data = frame.removeprefix(b"data: ")
        lines = [b"data: " + data]
        if multiline and data.startswith(b"{"):
            lines = [b"data: {", b"data:" + data[1:]]  # joined: '{\n...', still the same JSON
        if fields:
            lines = [b"event: message", b"id: 7", *lines, b"retry: 1000"]
        if comments:
            out.append(b": keep-alive" + newline + newline)
            lines = [b": ping", *lines]
        out.append(newline.join(lines) + newline + newline)
    return b"".join(out)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_recorded_stream_in_one_read_and_byte_by_byte(name: str) -> None:
    body = RECORDED[name]
    implicit = "smollm2" in name
    want = reference(body, implicit)
    assert want[0] and want[1]
    assert read([body], implicit) == want
    assert read([body[i:i + 1] for i in range(len(body))], implicit) == want


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(RECORDED)),
    st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_recorded_stream_over_random_chunkings(
    name: str, cuts: list[int], newline: bytes, comments: bool, fields: bool, multiline: bool
) -> None:
    implicit = "smollm2" in name
    body = restyle(RECORDED[name], newline, comments, fields, multiline)
    assert read(cut(body, cuts), implicit) == reference(RECORDED[name], implicit)


def feed_all(chunks: list[bytes]) -> list[bytes]:
    frames = SSEFrames()
    out = [d for c in chunks for d in frames.feed(c)]
    return out + frames.close()


def test_frame_rules() -> None:
    assert feed_all([b"data: a\n\ndata: b\n\n"]) == [b"a", b"b"]  # two events in one read
    assert feed_all([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [b"a", b"b"]  # CRLF split between reads
    assert feed_all([b"data: a\rdata: b\r\r"]) == [b"a\nb"]  # CR line ends, two data lines
    assert feed_all([b": comment\n\nevent: x\nid: 1\n\ndata:tight\n\n"]) == [b"tight"]  # no data: no event
    assert feed_all([b"data\ndata: x\n\n"]) == [b"\nx"]  # a bare 'data' line is an empty line of data
    assert feed_all([b"data: last"]) == [b"last"]  # unterminated at the end of the stream
    assert feed_all([b"data: last\r"]) == [b"last"]
    assert feed_all([b"\n\n\n", b""]) == []


def test_unicode_line_breaks_inside_json_do_not_split_frames() -> None:
    # pydantic writes U+2028 / U+0085 raw inside JSON strings; a text line splitter would cut there
    text = "line\u2028sep\x85nel\u2029end"
    chunk = {"model": "m", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
    body = b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\ndata: [DONE]\n\n"
    events, _ = read([body], implicit_think=False)
    assert "".join(getattr(e, "text", "") for e in events) == text


def test_done_ends_the_stream_and_error_frames_raise() -> None:
    after_done = b'data: [DONE]\n\ndata: {"choices": [{"index": 0, "delta": {"content": "late"}}]}\n\n'
    assert read([after_done])[0] == []
    with pytest.raises(UpstreamUnavailable):
        read([b'data: {"error": {"message": "boom"}}\n\n'])
    with pytest.raises(ValueError):
        read([b"data: {not json\n\n"])
