"""Benchmark 2: gateway capacity, on the replay upstream (a measuring tool, see bench/replay_upstream.py).

The CPU model cannot generate fast enough to load the gateway, so recorded real vLLM streams
are replayed at a set token rate per stream (default 50 tok/s, one SSE chunk per token, as vLLM
sends) and the number of concurrent streams is raised step by step. Per step and per gateway
(guard on with its defaults; guard off for reference; both started fresh, as separate processes):

* offered upstream chunks/s (streams x rate) and delivered chunks/s (the chunks the replay upstream
  wrote to the gateway during the step / step length),
* the gateway's CPU (psutil, user+system) and so **chunks per gateway CPU-second**, which is
  chunks/s per core independent of what else runs on the machine,
* release lag: how much later than the upstream's own pace a stream ended (e2e - tokens/rate),
  p50 and p99, and TTFT p99.

A step is *degraded* when a request fails, delivered < 80 % of offered (each stream also spends
time between requests), the lag p99 exceeds ``max(0.25 s, 3 x the first step's)`` or the TTFT p99
``max(1 s, 3 x the first step's)``; the ramp stops after the first degraded step. With
``--profile`` the guarded gateway is sampled by py-spy during one saturated step and the
per-chunk cost is broken down by where it goes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_aiohttp import AiohttpTransport

from bench import plots
from bench.common import (
    RESULTS,
    ROOT,
    Child,
    default_detector,
    detector_label,
    fmt,
    log,
    machine_info,
    pct,
    save,
    recorded_implicit_think,
    start_gateway,
    start_replay,
    tree_cpu_seconds,
    tree_rss_mib,
)
from bench.replay_upstream import FIXTURES_DIR

GOAL_CHUNKS_PER_CORE = 5000


class Lean:
    """Per-request figures of the capacity client: raw bytes only, no per-frame JSON parsing."""

    __slots__ = ("start", "ttft", "end", "tokens", "blocked", "error")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ttft: float | None = None
        self.end: float | None = None
        self.tokens = 0
        self.blocked = False
        self.error: str | None = None


_USAGE = re.compile(rb'"completion_tokens":(\d+)')


async def lean_stream(client: httpx.AsyncClient, base: str, body: dict[str, Any]) -> Lean:
    r = Lean()
    tail = b""
    try:
        async with client.stream("POST", base + "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                r.error = f"HTTP {resp.status_code}"
                return r
            async for data in resp.aiter_raw():
                if r.ttft is None and (b'"reasoning":"' in data or (b'"content":"' in data and b'"content":""' not in data)):
                    r.ttft = time.perf_counter() - r.start
                tail = (tail + data)[-4096:]
    except httpx.HTTPError as exc:
        r.error = type(exc).__name__
    r.end = time.perf_counter()
    if r.error is None:
        if b"data: [DONE]" not in tail:
            r.error = "no [DONE]"
        elif b'"error"' in tail:
            r.error = "error frame"
        m = _USAGE.findall(tail)
        r.tokens = int(m[-1]) if m else 0
        r.blocked = b"content_filter" in tail
    return r


def cpu_seconds(pid: int) -> float:
    return tree_cpu_seconds(pid)  # the gateway's workers, when it has several


async def step(base: str, gw: Child, replay: Child, streams: int, seconds: float, rate: float,
               max_tokens: int) -> dict[str, Any]:
    body = {"model": "replay", "messages": [{"role": "user", "content": "capacity"}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": max_tokens}
    limits = httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8)
    done: list[Lean] = []
    # the load client reads through aiohttp too: with httpx's own parser it spent a core before the
    # gateway did, and the ramp measured the client
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0), limits=limits,
                                 transport=transport) as client:
        stop_at = time.perf_counter() + seconds + 3.0  # 3 s ramp-in, not measured
        window: list[float] = []

        async def worker(i: int) -> None:
            await asyncio.sleep(3.0 * i / streams)  # spread the starts over the ramp-in
            while time.perf_counter() < stop_at:
                done.append(await lean_stream(client, base, body))

        async def frames() -> float:
            return float((await client.get(replay.url + "/control/stats")).json()["frames"])

        async def meter() -> None:
            await asyncio.sleep(3.0)
            window.append(await frames())
            window.append(time.perf_counter())
            window.append(cpu_seconds(gw.pid))
            window.append(cpu_seconds(replay.pid))
            me = psutil.Process()
            window.append(me.cpu_times().user + me.cpu_times().system)
            await asyncio.sleep(seconds)
            window.append(await frames())
            window.append(time.perf_counter())
            window.append(cpu_seconds(gw.pid))
            window.append(cpu_seconds(replay.pid))
            window.append(me.cpu_times().user + me.cpu_times().system)

        await asyncio.gather(meter(), *(worker(i) for i in range(streams)))
    f0, t0, gw0, rp0, me0, f1, t1, gw1, rp1, me1 = window
    inside = [r for r in done if r.end is not None and t0 <= r.end <= t1]
    ok = [r for r in inside if r.error is None]
    span = t1 - t0
    # upstream chunks the gateway took in during the window (the replay counts what it wrote; a
    # gateway that falls behind pushes back through TCP and the count drops)
    delivered = (f1 - f0) / span
    gw_cores = (gw1 - gw0) / span
    lag = [max(0.0, (r.end - r.start) - r.tokens / rate) for r in ok if r.end is not None]  # type: ignore[operator]
    return {
        "streams": streams,
        "offered_chunks_per_s": streams * rate,
        "delivered_chunks_per_s": round(delivered, 1),
        "requests": len(inside),
        "errors": len(inside) - len(ok),
        "blocked": sum(r.blocked for r in ok),
        "gateway_cores": round(gw_cores, 3),
        "replay_cores": round((rp1 - rp0) / span, 3),
        "client_cores": round((me1 - me0) / span, 3),
        "chunks_per_cpu_s": round(delivered / gw_cores, 1) if gw_cores > 0 else None,
        "lag_p50_s": pct(lag, 50),
        "lag_p99_s": pct(lag, 99),
        "ttft_p99_s": pct([r.ttft for r in ok if r.ttft is not None], 99),
        "rss_mib": round(tree_rss_mib(gw.pid), 1),
    }


def degraded(s: dict[str, Any], first: dict[str, Any]) -> bool:
    """Errors, the gateway no longer keeping pace, or latency well above the lightest load's."""
    if s["errors"] or s["delivered_chunks_per_s"] < 0.8 * s["offered_chunks_per_s"]:
        return True
    lag0, ttft0 = first["lag_p99_s"] or 0.0, first["ttft_p99_s"] or 0.0
    return (s["lag_p99_s"] or 0.0) > max(0.25, 3 * lag0) or (s["ttft_p99_s"] or 0.0) > max(1.0, 3 * ttft0)


# --- profile -------------------------------------------------------------------------------------
BUCKETS = [  # (label, substring of "file:function" frames), first match from the leaf upwards wins
    ("guard detector (lexicon / learned)", ("guard/detectors/",)),
    ("guard monitor (windows, hold-back)", ("guard/monitor.py",)),
    ("think splitter", ("server/thinksplit.py",)),
    ("upstream SSE parse (json.loads, events)", ("server/upstream.py", "json/decoder.py", "json/__init__.py")),
    ("SSE writer (json.dumps, frames)", ("server/sse.py", "json/encoder.py")),
    ("completion / route loop", ("server/completion.py", "server/routes.py", "server/state.py")),
    ("prometheus metrics", ("prometheus_client/",)),
    ("httpx / httpcore / h11 (upstream client)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("starlette / fastapi (streaming response)", ("starlette/", "fastapi/")),
    ("uvicorn (HTTP server)", ("uvicorn/",)),
    ("asyncio event loop", ("asyncio/", "uvloop")),
]


def _bucket(stack: list[str]) -> str:
    for frame in reversed(stack):  # leaf last in py-spy's collapsed format
        for label, keys in BUCKETS:
            if any(k in frame for k in keys):
                return label
    return "other"


def profile(pid: int, seconds: float, out: Path) -> dict[str, Any] | None:
    exe = shutil.which("py-spy") or str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "py-spy")
    if not Path(exe).exists():
        log("py-spy not installed: no profile")
        return None
    cmd = [exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not out.is_file():
        log(f"py-spy failed: {res.stderr[-500:]}")
        return None
    by_bucket: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    by_func: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack_s, _, n = line.rpartition(" ")
        if not stack_s:
            continue
        count = int(n)
        frames = stack_s.split(";")
        total += count
        by_bucket[_bucket(frames)] += count
        by_leaf[frames[-1]] += count
        for f in set(frames):
            by_func[f] += count
    if not total:
        return None
    share = lambda c: {k: round(v / total, 4) for k, v in c.most_common(25)}  # noqa: E731
    return {"samples": total, "self_by_bucket": share(by_bucket), "self_by_function": share(by_leaf),
            "inclusive_by_function": share(by_func)}


async def ramp(args: argparse.Namespace, gw: Child, replay: Child, label: str) -> tuple[list[dict[str, Any]], int | None]:
    steps: list[dict[str, Any]] = []
    saturated = None
    for n in args.streams:
        s = await step(gw.url, gw, replay, n, args.step_seconds, args.tok_rate, args.max_tokens)
        steps.append(s)
        bad = degraded(s, steps[0])
        s["degraded"] = bad
        log(f"{label:<9} streams={n:<4} offered={s['offered_chunks_per_s']:>7.0f}/s delivered={s['delivered_chunks_per_s']:>7.0f}/s "
            f"gw={s['gateway_cores']:.2f} cores -> {fmt(s['chunks_per_cpu_s'], 0)} chunks/cpu-s, lag p99 "
            f"{fmt((s['lag_p99_s'] or 0) * 1000, 0)} ms, errors {s['errors']}, blocked {s['blocked']}{'  DEGRADED' if bad else ''}")
        if bad:
            saturated = n
            break
    return steps, saturated


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", default=str(FIXTURES_DIR / "smollm2-135m.jsonl"))
    p.add_argument("--tok-rate", type=float, default=50.0)
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[4, 8, 16, 32, 64, 96, 128, 192, 256])
    p.add_argument("--step-seconds", type=float, default=15.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--targets", default="guard-on,guard-off", help="guard-on, guard-off, live, hidden (comma-separated)")
    p.add_argument("--detector", default=None, help="gateway detector (default: the gateway's own; lexicon while the learned artifact is missing)")
    p.add_argument("--profile", action="store_true", help="py-spy the guarded gateway at a saturated load")
    p.add_argument("--profile-streams", type=int, default=0, help="load for the profile (default: the saturation step)")
    args = p.parse_args(argv)
    detector = args.detector or default_detector()
    fixture = Path(args.fixture)
    implicit = recorded_implicit_think(fixture)
    replay = start_replay(fixture, tok_rate=args.tok_rate)
    series: dict[str, list[dict[str, Any]]] = {}
    saturation: dict[str, int | None] = {}
    prof = None
    try:
        for target in args.targets.split(","):
            mode = target if target in ("live", "hidden", "buffered") else None
            gw = start_gateway(replay.url, guard=target != "guard-off", mode=mode, detector=detector,
                               name=f"cap-{target}", implicit_think=implicit)
            try:
                steps, sat = asyncio.run(ramp(args, gw, replay, target))
                series[target], saturation[target] = steps, sat
                if args.profile and target == "guard-on":
                    n = args.profile_streams or sat or args.streams[-1]
                    log(f"profiling the guarded gateway at {n} streams")

                    async def load_while_profiling() -> dict[str, Any] | None:
                        task = asyncio.create_task(step(gw.url, gw, replay, n, 20.0, args.tok_rate, args.max_tokens))
                        await asyncio.sleep(4.0)
                        result = await asyncio.to_thread(profile, gw.pid, 14.0, RESULTS / "capacity-pyspy.txt")
                        await task
                        return result

                    prof = asyncio.run(load_while_profiling())
            finally:
                gw.stop()
    finally:
        replay.stop()
    best = {t: max((s["chunks_per_cpu_s"] or 0) for s in steps) for t, steps in series.items()}
    sustained = {t: max((s["delivered_chunks_per_s"] for s in steps if not s["degraded"]), default=0.0)
                 for t, steps in series.items()}
    data = {
        "benchmark": "capacity", "machine": machine_info(), "fixture": fixture.name, "tok_rate": args.tok_rate,
        "detector": detector_label(detector), "args": vars(args), "series": series, "saturation_streams": saturation,
        "chunks_per_cpu_s_best": best, "sustained_chunks_per_s": sustained, "goal_chunks_per_core": GOAL_CHUNKS_PER_CORE,
        "profile": prof,
    }
    save("capacity", data)
    plots.capacity(data, ROOT / "docs" / "img" / "bench_capacity.png")
    print(markdown(data))


def markdown(data: dict[str, Any]) -> str:
    lines = ["| gateway | streams | offered chunks/s | delivered chunks/s | gateway cores | chunks per CPU-s | lag p50 / p99 (ms) | TTFT p99 (ms) | errors | RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t, steps in data["series"].items():
        for s in steps:
            ms = lambda x: fmt(None if x is None else x * 1000, 0)  # noqa: E731
            lines.append(f"| {t} | {s['streams']} | {s['offered_chunks_per_s']:.0f} | {s['delivered_chunks_per_s']:.0f} | "
                         f"{s['gateway_cores']:.2f} | {fmt(s['chunks_per_cpu_s'], 0)} | {ms(s['lag_p50_s'])} / {ms(s['lag_p99_s'])} | "
                         f"{ms(s['ttft_p99_s'])} | {s['errors']} | {s['rss_mib']}{' (degraded)' if s['degraded'] else ''} |")
    prof = data.get("profile")
    if prof:
        lines += ["", "Where the guarded gateway's CPU goes (py-spy, self time by area):", "",
                  "| area | share |", "|---|---|"]
        lines += [f"| {k} | {v:.1%} |" for k, v in prof["self_by_bucket"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
