"""Benchmark 6: gateway workers and the pass-through's added first-token time (replay upstream).

* ``workers``: the capacity ramp of benchmark 2 (same client, same replay upstream at 50 tok/s),
  guard on, once with one gateway worker and once with two (``thoughtguard serve --workers 2``),
  per detector: the shipped intent reader, whose checks are most of a worker's CPU, and the
  lexicon, which leaves the gateway's own hot path. Figures: delivered chunks/s at the highest
  load that kept latency and at saturation, the two-worker/one-worker ratio of each, and chunks
  per CPU-second of the whole gateway process tree. The replay upstream and the load client run
  on the same machine (on this 2-core machine they share the cores the workers need; see the
  report for their share).
* ``ttft``: the time to the first text chunk through a pass-through gateway (``--no-guard``) and
  from the replay upstream directly: requests one at a time, the targets interleaved (c=1), and 64
  streams in flight, each starting its next request as one ends, in alternating phases per target
  (c=64); added TTFT = gateway minus direct, at p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from types import SimpleNamespace
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from bench.capacity import FIXTURES_DIR, ramp
from bench.common import (
    RESULTS,
    fmt,
    log,
    machine_info,
    pct,
    save,
    recorded_implicit_think,
    start_gateway,
    start_replay,
)

GOAL_RATIO = 1.7
GOAL_ADDED_TTFT_MS = {1: ("p50", 1.0), 64: ("p99", 3.0)}
RAMPS = {"intent": [8, 16, 24, 32, 40, 48, 64, 80, 96], "lexicon": [128, 256, 320, 384, 448, 512, 640]}


async def _workers(args: argparse.Namespace, replay: Any, implicit: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for detector in args.detectors.split(","):
        per: dict[str, Any] = {}
        for n in (1, 2):
            gw = start_gateway(replay.url, detector=None if detector == "intent" else detector, workers=n,
                               name=f"scale-{detector}-{n}w", implicit_think=implicit)
            try:
                ramp_args = SimpleNamespace(streams=RAMPS[detector], step_seconds=args.step_seconds,
                                            tok_rate=args.tok_rate, max_tokens=args.max_tokens)
                steps, sat = await ramp(ramp_args, gw, replay, f"{detector}/{n}w")
            finally:
                gw.stop()
            kept = [s for s in steps if not s["degraded"]]
            per[f"{n}w"] = {
                "steps": steps, "saturation_streams": sat,
                "kept_chunks_per_s": max((s["delivered_chunks_per_s"] for s in kept), default=0.0),
                "peak_chunks_per_s": max(s["delivered_chunks_per_s"] for s in steps),
                "chunks_per_cpu_s_at_kept": next((s["chunks_per_cpu_s"] for s in reversed(kept)), None),
            }
        one, two = per["1w"], per["2w"]
        per["ratio_kept"] = round(two["kept_chunks_per_s"] / one["kept_chunks_per_s"], 3) if one["kept_chunks_per_s"] else None
        per["ratio_peak"] = round(two["peak_chunks_per_s"] / one["peak_chunks_per_s"], 3)
        log(f"{detector}: 1 worker {one['peak_chunks_per_s']:.0f} chunks/s at saturation, 2 workers "
            f"{two['peak_chunks_per_s']:.0f} ({per['ratio_peak']}x; kept-latency {per['ratio_kept']}x)")
        out[detector] = per
    return out


async def _first_text(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> float | None:
    start = time.perf_counter()
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            return None
        ttft = None
        async for data in resp.aiter_raw():
            if ttft is None and (b'"reasoning":"' in data or (b'"content":"' in data and b'"content":""' not in data)):
                ttft = time.perf_counter() - start
        return ttft


async def _closed_loop(client: httpx.AsyncClient, url: str, body: dict[str, Any], streams: int,
                       seconds: float) -> list[float]:
    stop = time.perf_counter() + seconds
    got: list[float] = []

    async def loop() -> None:
        while time.perf_counter() < stop:
            x = await _first_text(client, url, body)
            if x is not None:
                got.append(x)

    await asyncio.gather(*(loop() for _ in range(streams)))
    return got


async def _ttft(args: argparse.Namespace, replay: Any, implicit: bool) -> dict[str, Any]:
    gw = start_gateway(replay.url, guard=False, name="ttft-off", implicit_think=implicit)
    body = {"model": "replay", "messages": [{"role": "user", "content": "ttft"}], "stream": True,
            "max_tokens": 32}
    targets = {"direct": replay.url, "guard-off": gw.url}
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=2.0)
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits, transport=AiohttpTransport(limits=limits)) as client:
            for c in (1, 64):
                got: dict[str, list[float]] = {t: [] for t in targets}
                for t in targets:  # warm the connections
                    await asyncio.gather(*(_first_text(client, targets[t], body) for _ in range(c)))
                if c == 1:  # one request at a time, the targets interleaved in a fresh order each time
                    for _ in range(args.ttft_requests):
                        for t in random.sample(list(targets), len(targets)):
                            x = await _first_text(client, targets[t], body)
                            if x is not None:
                                got[t].append(x)
                else:  # c streams in flight, each starting its next request when one ends (closed loop)
                    for _ in range(args.ttft_rounds):
                        for t in random.sample(list(targets), len(targets)):
                            got[t] += await _closed_loop(client, targets[t], body, c, args.ttft_seconds)
                row = {t: {"n": len(v), "p50_ms": pct([x * 1000 for x in v], 50),
                           "p99_ms": pct([x * 1000 for x in v], 99)} for t, v in got.items()}
                q, goal = GOAL_ADDED_TTFT_MS[c]
                added = row["guard-off"][f"{q}_ms"] - row["direct"][f"{q}_ms"]
                row["added_ms"] = {"p50": row["guard-off"]["p50_ms"] - row["direct"]["p50_ms"],
                                   "p99": row["guard-off"]["p99_ms"] - row["direct"]["p99_ms"]}
                row["goal"] = {"quantile": q, "max_added_ms": goal, "met": added <= goal}
                log(f"c={c}: TTFT direct p50/p99 {fmt(row['direct']['p50_ms'], 2)}/{fmt(row['direct']['p99_ms'], 2)} ms, "
                    f"gateway {fmt(row['guard-off']['p50_ms'], 2)}/{fmt(row['guard-off']['p99_ms'], 2)} ms: added {q} "
                    f"{added:.2f} ms (goal <= {goal})")
                out[str(c)] = row
    finally:
        gw.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="workers,ttft")
    p.add_argument("--detectors", default="intent,lexicon", help="guard detectors of the worker ramps")
    p.add_argument("--fixture", default=str(FIXTURES_DIR / "smollm2-135m.jsonl"))
    p.add_argument("--tok-rate", type=float, default=50.0)
    p.add_argument("--step-seconds", type=float, default=12.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--ttft-requests", type=int, default=200, help="c=1: requests per target")
    p.add_argument("--ttft-rounds", type=int, default=3, help="c=64: closed-loop phases per target")
    p.add_argument("--ttft-seconds", type=float, default=6.0, help="c=64: length of each phase")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    random.seed(args.seed)
    import json
    from pathlib import Path

    fixture = Path(args.fixture)
    implicit = recorded_implicit_think(fixture)
    data: dict[str, Any] = {"benchmark": "scaling", "machine": machine_info(), "fixture": fixture.name,
                            "tok_rate": args.tok_rate, "args": vars(args), "goal_ratio": GOAL_RATIO}
    parts = args.parts.split(",")
    replay = start_replay(fixture, tok_rate=args.tok_rate)
    try:
        if "workers" in parts:
            data["workers"] = asyncio.run(_workers(args, replay, implicit))
        if "ttft" in parts:
            data["ttft"] = asyncio.run(_ttft(args, replay, implicit))
    finally:
        replay.stop()
    previous = RESULTS / "scaling.json"
    if previous.is_file():  # a run of one part keeps the other part's last figures
        old = json.loads(previous.read_text())
        data = {**{k: old[k] for k in ("workers", "ttft") if k in old and k not in data}, **data}
    save("scaling", data)
    print(markdown(data))


def markdown(data: dict[str, Any]) -> str:
    lines: list[str] = []
    if "workers" in data:
        lines += ["| detector | workers | streams kept | chunks/s kept | chunks/s at saturation | chunks per CPU-s (kept) |"
                  " replay + client cores at saturation |", "|---|---|---|---|---|---|---|"]
        for det, per in data["workers"].items():
            for w in ("1w", "2w"):
                r = per[w]
                kept = [s for s in r["steps"] if not s["degraded"]]
                last = r["steps"][-1]
                lines.append(f"| {det} | {w[0]} | {kept[-1]['streams'] if kept else '-'} | {r['kept_chunks_per_s']:.0f} | "
                             f"{r['peak_chunks_per_s']:.0f} | {fmt(r['chunks_per_cpu_s_at_kept'], 0)} | "
                             f"{last['replay_cores'] + last['client_cores']:.2f} |")
            lines.append(f"| {det} | 2 / 1 | | {fmt(per['ratio_kept'], 2)}x | {fmt(per['ratio_peak'], 2)}x | | |")
    if "ttft" in data:
        lines += ["", "| concurrency | direct TTFT p50 / p99 (ms) | pass-through p50 / p99 (ms) | added p50 / p99 (ms) | goal |",
                  "|---|---|---|---|---|"]
        for c, row in data["ttft"].items():
            d, g, a, goal = row["direct"], row["guard-off"], row["added_ms"], row["goal"]
            lines.append(f"| {c} | {fmt(d['p50_ms'], 2)} / {fmt(d['p99_ms'], 2)} | {fmt(g['p50_ms'], 2)} / {fmt(g['p99_ms'], 2)} | "
                         f"{a['p50']:.2f} / {a['p99']:.2f} | {goal['quantile']} ≤ {goal['max_added_ms']} ms: "
                         f"{'met' if goal['met'] else 'not met'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
