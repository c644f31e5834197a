"""Reading an OpenAI-style chat-completion stream the way the ``openai`` SDK does, with timings.

Transport-free: feed it the response's lines as they arrive (``requests.iter_lines``,
``httpx.aiter_lines``) and it keeps what a load test or benchmark reports per request: time to
first token (reasoning or answer text), time to first answer token, the gap between text chunks
(inter-token latency as the client sees it), tokens, the finish reason, the ``thoughtguard``
extension and the outcome (``ok`` / ``blocked`` / ``steered`` / ``error``).

Like the SDK's SSE decoder, ``data:`` lines are joined until a blank line ends the event, ``:``
comments and other fields are ignored, ``[DONE]`` ends the stream, and a frame that carries an
``error`` object is an error (the SDK raises ``APIError`` on it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

OUTCOMES = ("ok", "blocked", "steered", "error")


@dataclass
class StreamResult:
    start: float
    status: int | None = None
    headers_at: float | None = None
    first_token: float | None = None  # first reasoning or answer text
    first_answer: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # arrival of each text-carrying chunk
    chunk_ends: list[int] = field(default_factory=list)  # end offset of each chunk in reasoning + content
    end: float | None = None
    reasoning: str = ""
    content: str = ""
    finish_reason: str | None = None
    thoughtguard: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False  # saw ``data: [DONE]``
    chunks: int = 0  # every data frame, text or not

    # --- derived figures -------------------------------------------------------------------
    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.start

    @property
    def ttfat(self) -> float | None:
        return None if self.first_answer is None else self.first_answer - self.start

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.start

    @property
    def itl(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def completion_tokens(self) -> int:
        """Tokens the upstream generated (usage, when sent), else text chunks received."""
        if self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return len(self.chunk_times)

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return "error"
        ext = self.thoughtguard or {}
        if self.finish_reason == "content_filter" or ext.get("action") == "block":
            return "blocked"
        if ext.get("action") == "steer":
            return "steered"
        return "ok"


class StreamReader:
    """Feed lines of one SSE response; the result fills in as frames arrive."""

    def __init__(self, result: StreamResult, clock: Callable[[], float] = time.perf_counter) -> None:
        self.result, self.clock = result, clock
        self._data: list[str] = []

    def feed_line(self, line: str | bytes) -> None:
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        line = line.rstrip("\r\n")
        if not line:
            self._dispatch()
            return
        if line.startswith(":"):
            return  # comment / keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
            # vLLM and the gateway send one-line events; dispatch at once so the arrival time is
            # the line's, not the blank line's (the SDK behaves the same for one-line events)
            if len(self._data) == 1 and (value.strip() == "[DONE]" or value.rstrip().endswith("}")):
                self._dispatch()

    def finish(self) -> StreamResult:
        """Call when the body ended (or the read failed); flags truncated streams as errors."""
        self._dispatch()
        r = self.result
        r.end = r.end or self.clock()
        if r.error is None and not r.done:
            r.error = "stream ended without [DONE]"
        elif r.error is None and r.finish_reason is None:
            r.error = "stream ended without a finish_reason"
        return r

    def _dispatch(self) -> None:
        if not self._data:
            return
        data, self._data = "\n".join(self._data), []
        r = self.result
        now = self.clock()
        if data.strip() == "[DONE]":
            r.done = True
            r.end = now
            return
        try:
            obj = json.loads(data)
        except ValueError:
            r.error = r.error or f"undecodable frame: {data[:80]!r}"
            return
        r.chunks += 1
        if "error" in obj:
            err = obj["error"]
            r.error = r.error or (err.get("message") if isinstance(err, dict) else str(err)) or "error frame"
            return
        if obj.get("usage"):
            r.usage = obj["usage"]
        text = False
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            thought = delta.get("reasoning") or delta.get("reasoning_content")
            if thought:
                r.reasoning += thought
                text = True
            content = delta.get("content")
            if content:
                r.content += content
                text = True
                if r.first_answer is None and not choice.get("finish_reason"):
                    r.first_answer = now
            if choice.get("finish_reason"):
                r.finish_reason = choice["finish_reason"]
                if choice.get("thoughtguard") is not None:
                    r.thoughtguard = choice["thoughtguard"]
        if text and not (r.finish_reason == "content_filter"):
            if r.first_token is None:
                r.first_token = now
            r.chunk_times.append(now)
            r.chunk_ends.append(len(r.reasoning) + len(r.content))


def result_from_json(result: StreamResult, body: dict[str, Any], now: float) -> StreamResult:
    """Fill a result from a non-streaming ``chat.completion`` body."""
    result.end = now
    result.done = True
    if "error" in body:
        err = body["error"]
        result.error = (err.get("message") if isinstance(err, dict) else str(err)) or "error"
        return result
    choice = (body.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    result.reasoning = msg.get("reasoning") or msg.get("reasoning_content") or ""
    result.content = msg.get("content") or ""
    result.finish_reason = choice.get("finish_reason")
    result.thoughtguard = choice.get("thoughtguard") or msg.get("thoughtguard")
    result.usage = body.get("usage")
    result.first_token = result.first_answer = now
    return result
