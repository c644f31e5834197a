"""Locust load test for thoughtguard (or any OpenAI-compatible chat server).

Each simulated user posts ``/v1/chat/completions`` as the ``openai`` SDK does (JSON body, bearer
key, ``stream: true`` with ``stream_options.include_usage``), reads the server-sent events as they
arrive and reports, besides the request itself (type ``POST``, full-stream latency), custom
request types that show up in Locust's tables, CSV and HTML report:

==========  ==============  =================================================================
type        name            value in the "response time" columns
==========  ==============  =================================================================
POST        task kind       arrival of the request to the last byte (``[DONE]``), ms
TTFT        task kind       time to the first reasoning or answer text, ms
TTFAT       task kind       time to the first answer text, ms
ITL         task kind       one entry per gap between text chunks, ms
TOKENS      task kind       completion tokens of the request (the count, not ms)
OUTCOME     ok / blocked /  full-stream latency, ms; the row's request count is the count of
            steered / error that outcome
==========  ==============  =================================================================

A request fails (Locust's failure count, non-zero exit code) when the HTTP status is not 200,
the stream breaks, carries an error frame or ends without ``[DONE]``, or when the guard blocks a
request whose prompt is labelled safe (a false positive; ``--allow-benign-blocks`` counts it
only). Run headless, e.g. (``make loadtest`` does this)::

    locust -f loadtest/locustfile.py --headless -H http://127.0.0.1:8000 -u 8 -r 2 -t 60s \
        --mix "benign=4,xstest=2,harmful=1,figstep=1,image=1,benign:nostream=1" \
        --csv results/loadtest/run --html results/loadtest/run.html

Options of this file (also as ``LOCUST_<NAME>`` environment variables): ``--mix``,
``--data-dir``, ``--model`` (default: the first of ``/v1/models``), ``--max-tokens``,
``--temperature``, ``--hold-back`` (``buffered|hidden|live``: the per-request ``thoughtguard``
mode; unset = the server's), ``--api-key``, ``--request-timeout``, ``--think-time``,
``--allow-benign-blocks``, ``--seed``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gevent  # noqa: E402  (locust has patched the world by now)
import requests  # noqa: E402
from locust import HttpUser, events, task  # noqa: E402

from loadtest.sse import StreamReader, StreamResult, result_from_json  # noqa: E402
from loadtest.taskmix import DEFAULT_MIX, Prompt, TaskMix  # noqa: E402


class BenignBlocked(Exception):
    """The guard blocked a request whose prompt is labelled safe."""


class RequestFailed(Exception):
    pass


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("thoughtguard")
    g.add_argument("--mix", default=DEFAULT_MIX, help="task mix, kind[:nostream]=weight,... (see loadtest/taskmix.py)")
    g.add_argument("--data-dir", default="", help="shared data folder (default ../shared/data)")
    g.add_argument("--model", default="", help="model name (default: first of GET /v1/models)")
    g.add_argument("--max-tokens", type=int, default=256)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--hold-back", default="", choices=["", "buffered", "hidden", "live"],
                   help="per-request thoughtguard mode (unset: the server's); leave unset against plain vLLM")
    g.add_argument("--api-key", default="unused", help="bearer key sent as the SDK does")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds until a request is abandoned")
    g.add_argument("--think-time", type=float, default=0.0, help="seconds a user waits between requests")
    g.add_argument("--allow-benign-blocks", action="store_true", help="count blocked safe prompts without failing them")
    g.add_argument("--seed", type=int, default=None)


_MIX: TaskMix | None = None
_MODEL: str | None = None


@events.test_start.add_listener
def _start(environment: Any, **_: Any) -> None:
    global _MIX, _MODEL
    opts = environment.parsed_options
    _MIX = TaskMix(opts.mix, opts.data_dir or None, seed=opts.seed)
    print("thoughtguard task mix:", _MIX.describe(), flush=True)
    _MODEL = opts.model or None


def _base(host: str) -> str:
    host = host.rstrip("/")
    return host[:-3] if host.endswith("/v1") else host


class ChatUser(HttpUser):
    """One client of the chat API; the task kind is drawn per request from the mix."""

    def wait_time(self) -> float:  # type: ignore[override]
        return float(self.environment.parsed_options.think_time)

    def on_stop(self) -> None:
        self.http.close()

    def on_start(self) -> None:
        global _MODEL
        # a plain (gevent-patched) requests session per user: the request rows are fired by
        # _report with the full-stream time and the outcome, not by Locust's session at headers
        self.http = requests.Session()
        if _MODEL is None:
            r = self.client.get(f"{_base(self.host)}/v1/models", name="/v1/models")
            _MODEL = r.json()["data"][0]["id"]

    @task
    def chat(self) -> None:
        assert _MIX is not None
        prompt = _MIX.draw()
        opts = self.environment.parsed_options
        body: dict[str, Any] = {
            "model": _MODEL,
            "messages": list(prompt.messages),
            "max_tokens": opts.max_tokens,
            "temperature": opts.temperature,
            "stream": prompt.stream,
        }
        if prompt.stream:
            body["stream_options"] = {"include_usage": True}
        if opts.hold_back:
            body["thoughtguard"] = {"mode": opts.hold_back}
        headers = {
            "Authorization": f"Bearer {opts.api_key}",
            "Accept": "application/json",
            "User-Agent": "OpenAI/Python locust-thoughtguard",
            "X-Stainless-Lang": "python",
        }
        result = self._send(prompt, body, headers, opts.request_timeout)
        self._report(prompt, result, allow_benign_blocks=opts.allow_benign_blocks)

    def _send(self, prompt: Prompt, body: dict[str, Any], headers: dict[str, str], timeout: float) -> StreamResult:
        url = f"{_base(self.host)}/v1/chat/completions"
        result = StreamResult(start=time.perf_counter())
        reader = StreamReader(result)
        try:
            with gevent.Timeout(timeout, RequestFailed(f"no end of response after {timeout:.0f}s")):
                with self.http.post(url, json=body, headers=headers, stream=prompt.stream, timeout=timeout) as resp:
                    result.status = resp.status_code
                    result.headers_at = time.perf_counter()
                    if resp.status_code != 200:
                        result.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                        result.end = time.perf_counter()
                        return result
                    if not prompt.stream:
                        return result_from_json(result, resp.json(), time.perf_counter())
                    for line in resp.iter_lines(chunk_size=None, decode_unicode=False):
                        reader.feed_line(line)
        except Exception as exc:  # noqa: BLE001 - every failure is a reported error, never a crashed task
            result.error = result.error or f"{type(exc).__name__}: {exc}"
        if prompt.stream:
            reader.finish()
        result.end = result.end or time.perf_counter()
        return result

    def _report(self, prompt: Prompt, r: StreamResult, *, allow_benign_blocks: bool) -> None:
        fire = self.environment.events.request.fire
        name = prompt.name
        outcome = r.outcome
        exc: Exception | None = None
        if r.error is not None:
            exc = RequestFailed(r.error[:300])
        elif outcome == "blocked" and prompt.label == "safe" and not allow_benign_blocks:
            ext = r.thoughtguard or {}
            exc = BenignBlocked(
                f"{prompt.source}: {ext.get('stage')}/{ext.get('category')} score={ext.get('score')} "
                f"detector={ext.get('detector')} reason={ext.get('reason')}"
            )
        e2e_ms = (r.e2e or 0.0) * 1000
        length = len(r.reasoning.encode()) + len(r.content.encode())
        ctx = {"outcome": outcome, "label": prompt.label, "source": prompt.source}
        fire(request_type="POST", name=name, response_time=e2e_ms, response_length=length, exception=exc, context=ctx)
        fire(request_type="OUTCOME", name=outcome, response_time=e2e_ms, response_length=0,
             exception=exc if outcome == "error" else None, context=ctx)
        if r.error is not None:
            return
        if r.ttft is not None:
            fire(request_type="TTFT", name=name, response_time=r.ttft * 1000, response_length=0, exception=None, context=ctx)
        if r.ttfat is not None:
            fire(request_type="TTFAT", name=name, response_time=r.ttfat * 1000, response_length=0, exception=None, context=ctx)
        for gap in r.itl:
            fire(request_type="ITL", name=name, response_time=gap * 1000, response_length=0, exception=None, context=ctx)
        tokens = r.completion_tokens
        fire(request_type="TOKENS", name=name, response_time=tokens, response_length=tokens, exception=None, context=ctx)

