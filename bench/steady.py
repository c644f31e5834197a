"""Steady soak: many streams for a long time against an upstream paced like a GPU model (`make soak`).

256 streams in flight (each starting its next request when one ends) for 10 minutes, through a
gateway with 2 workers and the guard on (the gateway's default detector), against the replay
upstream paced as a GPU-served model (first token after 150 ms, then 40 tok/s), all on loopback.
Sampled every 5 s: the gateway's RSS (the supervisor and its workers together, and per worker),
the merged in-flight gauge and the requests done. Pass: no request failed, RSS flat after the
warm-up (growth over the rest of the run at most ``--rss-slack`` of the warm RSS), and the in-flight
gauge back to 0 within 15 s of the load stopping.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from typing import Any

import httpx
import numpy as np
import psutil
from httpx_aiohttp import AiohttpTransport

from bench.capacity import Lean, lean_stream
from bench.common import (
    default_detector,
    detector_label,
    log,
    machine_info,
    pct,
    save,
    recorded_implicit_think,
    start_gateway,
    start_replay,
    tree_rss_mib,
)
from bench.replay_upstream import FIXTURES_DIR

_IN_FLIGHT = re.compile(r"^thoughtguard_requests_in_flight\{[^}]*\} ([0-9.eE+-]+)$", re.M)


def in_flight(text: str) -> float:
    return sum(float(v) for v in _IN_FLIGHT.findall(text))


def worker_rss(pid: int) -> list[float]:
    return [round(c.memory_info().rss / 2**20, 1) for c in psutil.Process(pid).children()
            if "spawn_main" in " ".join(c.cmdline())]


async def soak(args: argparse.Namespace, gw_url: str, gw_pid: int) -> dict[str, Any]:
    body = {"model": "replay", "messages": [{"role": "user", "content": "soak"}], "stream": True,
            "stream_options": {"include_usage": True}, "max_tokens": args.max_tokens}
    limits = httpx.Limits(max_connections=args.streams + 16, max_keepalive_connections=args.streams + 16)
    done: list[Lean] = []
    samples: list[dict[str, Any]] = []
    start = time.perf_counter()
    stop_at = start + args.duration
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=10.0), limits=limits,
                                 transport=AiohttpTransport(limits=limits)) as client:
        async def stream_loop(i: int) -> None:
            await asyncio.sleep(5.0 * i / args.streams)  # ramp in over 5 s
            while time.perf_counter() < stop_at:
                done.append(await lean_stream(client, gw_url, body))

        async def sampler() -> None:
            while time.perf_counter() < stop_at:
                metrics = (await client.get(gw_url + "/metrics")).text
                samples.append({"t": round(time.perf_counter() - start, 1), "rss_mib": round(tree_rss_mib(gw_pid), 1),
                                "workers_rss_mib": worker_rss(gw_pid), "in_flight": in_flight(metrics),
                                "done": len(done), "errors": sum(r.error is not None for r in done)})
                log(f"t={samples[-1]['t']:>6}s rss={samples[-1]['rss_mib']} MiB in-flight={samples[-1]['in_flight']:.0f} "
                    f"done={samples[-1]['done']} errors={samples[-1]['errors']}")
                await asyncio.sleep(args.every)

        await asyncio.gather(sampler(), *(stream_loop(i) for i in range(args.streams)))
        settled_in = None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 15.0:
            if in_flight((await client.get(gw_url + "/metrics")).text) == 0:
                settled_in = round(time.perf_counter() - t0, 2)
                break
            await asyncio.sleep(0.5)
    errors = [r.error for r in done if r.error is not None]
    warm = [s for s in samples if s["t"] >= args.warmup]
    rss0 = float(np.mean([s["rss_mib"] for s in warm[:3]])) if warm else None
    rss1 = float(np.mean([s["rss_mib"] for s in warm[-3:]])) if warm else None
    slope = None
    if len(warm) >= 4:
        t = np.array([s["t"] for s in warm]) / 60.0
        slope = float(np.polyfit(t, np.array([s["rss_mib"] for s in warm]), 1)[0])
    flat = rss0 is not None and rss1 is not None and rss1 - rss0 <= args.rss_slack * rss0
    lag = [max(0.0, (r.end - r.start) - args.ttft - r.tokens / args.tok_rate) for r in done
           if r.error is None and r.end is not None]
    return {
        "requests": len(done), "errors": len(errors), "error_kinds": sorted(set(errors))[:10],
        "blocked": sum(r.blocked for r in done),
        "tokens": sum(r.tokens for r in done),
        "rss_warm_mib": rss0, "rss_end_mib": rss1, "rss_slope_mib_per_min": slope, "rss_flat": flat,
        "in_flight_zero_after_s": settled_in,
        "ttft_p50_s": pct([r.ttft for r in done if r.ttft is not None], 50),
        "ttft_p99_s": pct([r.ttft for r in done if r.ttft is not None], 99),
        "lag_p50_s": pct(lag, 50), "lag_p99_s": pct(lag, 99),
        "samples": samples,
        "pass": not errors and flat and settled_in is not None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.steady", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=256)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ttft", type=float, default=0.15, help="the replay upstream's time to its first token")
    p.add_argument("--tok-rate", type=float, default=40.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--warmup", type=float, default=120.0, help="seconds before RSS counts as warm")
    p.add_argument("--rss-slack", type=float, default=0.05, help="RSS growth allowed after the warm-up (share)")
    p.add_argument("--every", type=float, default=5.0)
    p.add_argument("--detector", default=None, help="gateway detector (default: the gateway's own)")
    p.add_argument("--fixture", default=str(FIXTURES_DIR / "smollm2-135m.jsonl"))
    args = p.parse_args(argv)
    from pathlib import Path

    fixture = Path(args.fixture)
    implicit = recorded_implicit_think(fixture)
    detector = args.detector or default_detector()
    replay = start_replay(fixture, tok_rate=args.tok_rate, extra=["--ttft", str(args.ttft)])
    gw = start_gateway(replay.url, detector=detector, workers=args.workers, name="steady", implicit_think=implicit)
    try:
        result = asyncio.run(soak(args, gw.url, gw.pid))
    finally:
        gw.stop()
        replay.stop()
    data = {"benchmark": "steady", "machine": machine_info(), "detector": detector_label(detector),
            "args": vars(args), **result}
    save("steady", data)
    print(summary(data))


def summary(data: dict[str, Any]) -> str:
    a = data["args"]
    ms = lambda x: "n/a" if x is None else f"{x * 1000:.0f}"  # noqa: E731
    return "\n".join([
        f"steady soak: {a['streams']} streams for {a['duration']:.0f} s, {a['workers']} workers, detector "
        f"{data['detector']}, upstream first token {a['ttft']} s then {a['tok_rate']} tok/s",
        f"  requests {data['requests']}, errors {data['errors']} {data['error_kinds']}, blocked {data['blocked']}, "
        f"tokens {data['tokens']}",
        f"  RSS after warm-up {data['rss_warm_mib']:.1f} MiB, at the end {data['rss_end_mib']:.1f} MiB "
        f"(slope {data['rss_slope_mib_per_min']:.2f} MiB/min): {'flat' if data['rss_flat'] else 'GROWING'}",
        f"  in-flight gauge back to 0 after {data['in_flight_zero_after_s']} s",
        f"  TTFT p50/p99 {ms(data['ttft_p50_s'])}/{ms(data['ttft_p99_s'])} ms; lag behind the upstream's pace "
        f"p50/p99 {ms(data['lag_p50_s'])}/{ms(data['lag_p99_s'])} ms",
        "VERDICT: " + ("pass" if data["pass"] else "FAIL"),
    ])


if __name__ == "__main__":
    main()
