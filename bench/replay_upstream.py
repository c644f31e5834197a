"""The replay upstream: a MEASURING TOOL, not a model and not a test double for behaviour.

An OpenAI-compatible server that answers ``POST /v1/chat/completions`` by replaying SSE streams
recorded from the real vLLM (``bench/fixtures/*.jsonl``, written by ``python -m bench.record``)
at a set token rate, optionally after a prefill delay (``--ttft``: the first token comes that long
after the request, the rest at ``--tok-rate``, as a GPU model paces a stream). It lets the
capacity benchmark push the gateway beyond what the CPU model can generate, lets the paced
benchmark show what ``buffered`` mode's first window costs at a real model's pace, and lets the
fault runs stall or cut an upstream on command. Every behaviour of the gateway is tested against
the real vLLM (tests/e2e, tests/loadtest); figures measured through this server are about the
gateway's own cost only.

It is a small asyncio HTTP/1.1 server (keep-alive, chunked responses) so that it costs little per
chunk next to the gateway it measures; frames are pre-encoded at start.

Routes:
  POST /v1/chat/completions   replay (always streamed; the gateway always asks for a stream)
  GET  /v1/models, /health    as vLLM
  GET  /metrics               ``vllm:num_requests_running`` and replay counters
  GET  /control/stats         JSON counters: active, started, completed, aborted, frames
  POST /control/stall         {"seconds": S, "after_frames": K}: streams (new and running) stop
                              sending after their K-th frame for S seconds (S < 0: until resume)
  POST /control/cut           {"after_frames": K}: streams are closed abruptly after K frames
  POST /control/reset         no stall, no cut

Matching: a request whose last user text equals a fixture's prompt replays that fixture;
otherwise the fixtures labelled safe are replayed round-robin. ``max_tokens`` truncates the
replay (finish_reason ``length``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@dataclass
class Fixture:
    id: str
    prompt: str
    label: str
    frames: list[bytes]  # encoded "data: {...}\n\n" frames, the last one carries the finish_reason
    text_frames: int
    offsets: list[float]  # recorded arrival of each frame, seconds since the first
    first_text: int  # index of the first frame that carries text (the frames before it go with it)


def _prompt_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return "\n".join(p.get("text", "") for p in c or () if p.get("type") == "text")
    return ""


def load_fixtures(paths: list[Path]) -> list[Fixture]:
    out: list[Fixture] = []
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            frames = [f"data: {f['data']}\n\n".encode() for f in rec["frames"]]
            text = sum(1 for f in rec["frames"] if f.get("text"))
            first = next((i for i, f in enumerate(rec["frames"]) if f.get("text")), 0)
            out.append(Fixture(rec["id"], rec["prompt"], rec.get("label", "safe"), frames, text,
                               [f["t"] for f in rec["frames"]], first))
    if not out:
        raise SystemExit(f"no fixtures in {paths}")
    return out


class Replay:
    def __init__(self, fixtures: list[Fixture], tok_rate: float, model: str, ttft: float = 0.0) -> None:
        self.fixtures, self.tok_rate, self.model, self.ttft = fixtures, tok_rate, model, ttft
        self.by_prompt = {f.prompt: f for f in fixtures}
        safe = [f for f in fixtures if f.label == "safe"] or fixtures
        self.round_robin = itertools.cycle(safe)
        self.stats = {"active": 0, "started": 0, "completed": 0, "aborted": 0, "cut": 0, "frames": 0}
        self.stall_after: int | None = None
        self.stall_until: float = 0.0
        self.stall_forever = False
        self.resume = asyncio.Event()
        self.cut_after: int | None = None

    # --- HTTP ------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self.route(method, path.split("?", 1)[0], body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, w: asyncio.StreamWriter) -> bool:
        if method == "POST" and path == "/v1/chat/completions":
            return await self.chat(json.loads(body or b"{}"), w)
        if method == "GET" and path == "/v1/models":
            return await self.json(w, {"object": "list", "data": [{"id": self.model, "object": "model",
                                                                    "owned_by": "replay"}]})
        if method == "GET" and path == "/health":
            return await self.json(w, {"status": "ok"})
        if method == "GET" and path == "/control/stats":
            return await self.json(w, self.stats)
        if method == "GET" and path == "/metrics":
            text = (f"vllm:num_requests_running{{model_name=\"{self.model}\"}} {self.stats['active']}\n"
                    + "".join(f"replay_{k} {v}\n" for k, v in self.stats.items()))
            return await self.send(w, 200, text.encode(), "text/plain; version=0.0.4")
        if method == "POST" and path.startswith("/control/"):
            return await self.control(path.removeprefix("/control/"), json.loads(body or b"{}"), w)
        return await self.json(w, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}, 404)

    async def send(self, w: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> bool:
        w.write(f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        await w.drain()
        return True

    async def json(self, w: asyncio.StreamWriter, obj: Any, status: int = 200) -> bool:
        return await self.send(w, status, json.dumps(obj).encode(), "application/json")

    async def control(self, what: str, args: dict[str, Any], w: asyncio.StreamWriter) -> bool:
        if what == "stall":
            seconds = float(args.get("seconds", -1))
            self.stall_after = int(args.get("after_frames", 0))
            self.stall_forever = seconds < 0
            self.stall_until = time.monotonic() + max(seconds, 0)
            self.resume.clear()
        elif what == "cut":
            self.cut_after = int(args.get("after_frames", 0))
        elif what == "reset":
            self.stall_after, self.stall_forever, self.cut_after = None, False, None
            self.stall_until = 0.0
            self.resume.set()
        else:
            return await self.json(w, {"error": {"message": f"unknown control {what}"}}, 404)
        return await self.json(w, {"ok": True, "stats": self.stats})

    # --- the replay ------------------------------------------------------------------------
    def pick(self, req: dict[str, Any]) -> Fixture:
        return self.by_prompt.get(_prompt_text(req.get("messages") or [])) or next(self.round_robin)

    async def _maybe_stall(self, sent: int) -> None:
        if self.stall_after is None or sent < self.stall_after:
            return
        if self.stall_forever:
            await self.resume.wait()
            return
        delay = self.stall_until - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self.resume.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def chat(self, req: dict[str, Any], w: asyncio.StreamWriter) -> bool:
        fx = self.pick(req)
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        frames = fx.frames
        if limit and fx.text_frames > limit:
            frames = self._truncate(fx, int(limit))
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        st = self.stats
        st["active"] += 1
        st["started"] += 1
        interval = 1.0 / self.tok_rate if self.tok_rate > 0 else 0.0
        start = time.monotonic()
        ok = False
        try:
            for i, frame in enumerate(frames):
                if self.cut_after is not None and i >= self.cut_after:
                    st["cut"] += 1
                    w.transport.abort()  # an upstream that dies mid-stream
                    return False
                await self._maybe_stall(i)
                if self.tok_rate > 0 and self.ttft > 0:  # prefill, then one frame per interval
                    delay = start + self.ttft + max(0, i - fx.first_text) * interval - time.monotonic()
                elif self.tok_rate > 0:
                    delay = start + i * interval - time.monotonic()
                elif self.tok_rate == 0:
                    delay = start + fx.offsets[min(i, len(fx.offsets) - 1)] - time.monotonic()
                else:
                    delay = 0.0
                if delay > 0:
                    await asyncio.sleep(delay)
                elif i % 64 == 63:
                    await asyncio.sleep(0)  # as fast as possible, but let other streams in
                w.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                st["frames"] += 1
                if w.transport.get_write_buffer_size() > 65536:
                    await w.drain()
                if w.transport.is_closing():
                    raise ConnectionResetError
            done = b"data: [DONE]\n\n"
            w.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
            await w.drain()
            ok = True
            st["completed"] += 1
            return True
        except (ConnectionError, asyncio.CancelledError):
            st["aborted"] += 1
            return False
        finally:
            st["active"] -= 1
            if not ok:
                w.transport.abort()

    def _truncate(self, fx: Fixture, limit: int) -> list[bytes]:
        out: list[bytes] = []
        text = 0
        last: dict[str, Any] = {}
        for frame in fx.frames:
            obj = json.loads(frame[6:])
            has_text = any((c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("reasoning")
                           for c in obj.get("choices") or ())
            if has_text:
                if text >= limit:
                    break
                text += 1
            out.append(frame)
            last = obj
        fin = {**last, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]}
        out.append(f"data: {json.dumps(fin, separators=(',', ':'))}\n\n".encode())
        return out


async def serve(args: argparse.Namespace) -> None:
    paths = [Path(p) for p in args.fixtures] or sorted(FIXTURES_DIR.glob("*.jsonl"))
    fixtures = load_fixtures(paths)
    model = args.model or json.loads(paths[0].read_text().splitlines()[0]).get("model", "replay")
    replay = Replay(fixtures, args.tok_rate, model, args.ttft)
    server = await asyncio.start_server(replay.handle, args.host, args.port, backlog=4096, limit=2**20)
    print(f"replay upstream: {len(fixtures)} fixtures, model {model}, {args.tok_rate} tok/s per stream"
          + (f" after a {args.ttft * 1000:.0f} ms prefill" if args.ttft > 0 else "") + ", "
          f"http://{args.host}:{args.port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.replay_upstream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8290)
    p.add_argument("--fixtures", action="append", default=[], help="JSONL recording(s) (default: all of bench/fixtures)")
    p.add_argument("--tok-rate", type=float, default=50.0,
                   help="frames per second per stream; 0 = the recorded timing; negative = as fast as possible")
    p.add_argument("--ttft", type=float, default=0.0,
                   help="seconds before the first text frame (a GPU model's prefill); the rest follow at --tok-rate"
                        " (needs --tok-rate > 0; 0 = the first frame at once, as before)")
    p.add_argument("--model", default=None, help="model name to report (default: the recording's)")
    args = p.parse_args(argv)
    try:
        import uvloop

        run = uvloop.run
    except (ImportError, AttributeError):
        run = asyncio.run
    try:
        run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
