"""Soak and faults (``make soak``): many concurrent streams for a few minutes, with faults injected.

Part 1, against the real vLLM (tiny model) through a gateway with its defaults (read timeout
lowered so a stalled upstream is noticed within the run): ``--streams`` closed-loop clients (benign
and unsafe scripts, streaming and not, with images) for ``--duration`` seconds, with, at set
points of the run:

* client drops: a burst of extra streams that hang up after a few chunks,
* upstream stall: vLLM frozen with SIGSTOP for longer than the gateway's read timeout, then resumed,
* upstream killed: vLLM SIGKILLed mid-run, then restarted on the same port.

Part 2, against the replay upstream (a measuring tool that can stall and cut on command): streams
stalled forever mid-stream must end within the read timeout; streams whose upstream connection is
cut must end at once; a burst of clients dropping mid-stream must abort every upstream stream.

Checked throughout (sampled every second from outside the gateway): its RSS, open file
descriptors and TCP sockets (psutil, by peer and state), its in-flight gauge (``/metrics``).
Every request must end cleanly: a normal end (``stop`` / ``length`` / ``content_filter``), an
error frame followed by ``[DONE]``, or an HTTP error with an OpenAI error body; a broken,
truncated or hung stream (past its timeout) is a failure. No errors are allowed outside the fault
windows, the gateway must serve again after each fault without a restart, and at the end the
in-flight gauge is 0 and sockets are back to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import statistics
import time
from typing import Any

import httpx
import psutil

from bench import plots
from bench.common import (
    ROOT,
    TINY_MODEL,
    Child,
    chat_body,
    default_detector,
    detector_label,
    log,
    machine_info,
    metric_value,
    new_client,
    run_batch,
    save,
    scripted_messages,
    serve_hints,
    start_gateway,
    start_replay,
    start_vllm,
    stream_chat,
)
from bench.replay_upstream import FIXTURES_DIR
from loadtest.sse import StreamResult

MIX = [("benign", True), ("benign_math", True), ("benign_image", True), ("unsafe_reasoning", True),
       ("collapse", True), ("benign", False), ("image_jailbreak", False)]


def classify(r: StreamResult, stream: bool) -> str:
    """clean: ok / blocked / steered / clean_error; otherwise the failure kind."""
    if r.error is None:
        return r.outcome
    if r.error.startswith("client timeout"):
        return "hung"
    if r.error == "dropped by client":
        return "dropped"
    if r.status is not None and r.status >= 500 and r.error.startswith("HTTP"):
        return "clean_error" if '"error"' in r.error else "unclean_http"
    if r.status is not None and 400 <= r.status < 500:
        return "client_error"
    if stream and r.status == 200 and r.done:
        return "clean_error"  # an error frame, then [DONE]
    return "broken"


class Sampler:
    def __init__(self, gw: Child, upstream_port: int | None = None) -> None:
        self.gw, self.proc = gw, psutil.Process(gw.pid)
        self.gw_port = int(gw.url.rsplit(":", 1)[1])
        self.upstream_port = upstream_port
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def sockets(self) -> dict[str, int]:
        out: collections.Counter[str] = collections.Counter()
        for c in self.proc.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN:
                out["listen"] += 1
            elif c.laddr and c.laddr.port == self.gw_port:
                out[f"client:{c.status}"] += 1
            elif c.raddr and self.upstream_port and c.raddr.port == self.upstream_port:
                out[f"upstream:{c.status}"] += 1
            else:
                out[f"other:{c.status}"] += 1
        return dict(out)

    def sample(self) -> dict[str, Any]:
        socks = self.sockets()
        try:
            in_flight = metric_value(httpx.get(self.gw.url + "/metrics", timeout=5).text, "thoughtguard_requests_in_flight")
        except httpx.HTTPError:
            in_flight = float("nan")
        s = {"t": round(time.monotonic() - self.t0, 2), "rss_mib": round(self.proc.memory_info().rss / 2**20, 2),
             "fds": self.proc.num_fds(), "sockets": sum(v for k, v in socks.items() if k != "listen"),
             "by_state": socks, "in_flight": in_flight}
        self.samples.append(s)
        return s

    def event(self, what: str, **kw: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.t0, 2), "what": what, **kw})
        log(f"event: {what} {kw if kw else ''}")

    async def run(self, stop: asyncio.Event, every: float = 1.0) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.sample)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass

    async def settle(self, within: float = 15.0, upstream_idle_ok: int = 10_000) -> dict[str, Any]:
        """Wait until nothing is in flight and no client socket is open; the last sample."""
        deadline = time.monotonic() + within
        while True:
            s = await asyncio.to_thread(self.sample)
            clients = sum(v for k, v in s["by_state"].items() if k.startswith("client:"))
            stale = sum(v for k, v in s["by_state"].items() if k.endswith("CLOSE_WAIT"))
            if s["in_flight"] == 0 and clients == 0 and stale == 0:
                s["settled"] = True
                return s
            if time.monotonic() > deadline:
                s["settled"] = False
                return s
            await asyncio.sleep(0.5)


async def part1(args: argparse.Namespace, vllm: Child, gw: Child, model: str) -> dict[str, Any]:
    vport = int(vllm.url.rsplit(":", 1)[1])
    sampler = Sampler(gw, vport)
    rng = random.Random(3)
    records: list[dict[str, Any]] = []
    faults: list[tuple[float, float]] = []  # windows in which errors are expected
    timeout = args.read_timeout + 30.0
    client = new_client(timeout=timeout)
    stop = asyncio.Event()
    # the fault-free soak runs for --duration, then the faults are injected while the load goes on
    end_at = time.monotonic() + args.duration + 10 * 3600  # set for real when the faults are done

    async def one(conv: str, stream: bool, drop: int | None = None) -> None:
        body = chat_body(model, scripted_messages(conv), stream=stream, max_tokens=128)
        t = time.monotonic() - sampler.t0
        r = await stream_chat(client, gw.url, body, drop_after_chunks=drop, timeout=timeout)
        records.append({"t_start": round(t, 2), "t_end": round(time.monotonic() - sampler.t0, 2), "conv": conv,
                        "stream": stream, "kind": classify(r, stream), "error": r.error, "e2e": r.e2e})

    async def worker() -> None:
        while time.monotonic() < end_at:
            conv, stream = rng.choice(MIX)
            await one(conv, stream)

    async def ok_again(since: float) -> float:
        """Seconds until a benign request through the gateway succeeds again."""
        while True:
            r = await stream_chat(client, gw.url, chat_body(model, scripted_messages("benign"), max_tokens=64), timeout=timeout)
            if r.error is None:
                return time.monotonic() - since
            await asyncio.sleep(0.5)

    async def faults_script() -> None:
        nonlocal end_at
        await asyncio.sleep(args.duration)
        sampler.event("soak done; faults start")
        start = time.monotonic() - sampler.t0
        sampler.event("client drops", streams=args.drops)
        await asyncio.gather(*(one(rng.choice(["benign", "unsafe_reasoning"]), True, drop=3) for _ in range(args.drops)))
        faults.append((start, time.monotonic() - sampler.t0 + 2.0))

        await asyncio.sleep(10.0)
        start = time.monotonic() - sampler.t0
        sampler.event("upstream stall (SIGSTOP vLLM)", seconds=args.stall)
        vllm.signal(signal.SIGSTOP)
        await asyncio.sleep(args.stall)
        vllm.signal(signal.SIGCONT)
        sampler.event("upstream resumed (SIGCONT)")
        rec = await ok_again(time.monotonic())
        faults.append((start, time.monotonic() - sampler.t0 + 2.0))
        sampler.event("serving again after stall", seconds=round(rec, 2))

        await asyncio.sleep(10.0)
        start = time.monotonic() - sampler.t0
        sampler.event("upstream killed (SIGKILL vLLM)")
        vllm.signal(signal.SIGKILL)
        vllm.proc.wait()  # type: ignore[union-attr]
        await asyncio.sleep(3.0)
        sampler.event("restarting vLLM")
        t_restart = time.monotonic()
        await asyncio.to_thread(vllm.start, 400)
        ready = time.monotonic()
        sampler.event("vLLM ready again", seconds=round(ready - t_restart, 1))
        rec = await ok_again(ready)
        faults.append((start, time.monotonic() - sampler.t0 + 2.0))
        sampler.event("serving again after restart", seconds_after_vllm_ready=round(rec, 2))
        await asyncio.sleep(10.0)  # load goes on after the recovery
        end_at = time.monotonic()

    sampler.sample()
    sampler_task = asyncio.create_task(sampler.run(stop))
    workers = [asyncio.create_task(worker()) for _ in range(args.streams)]
    fault_task = asyncio.create_task(faults_script())
    await fault_task
    await asyncio.gather(*workers)
    stop.set()
    await sampler_task
    settled = await sampler.settle()
    await client.aclose()
    after_close = await sampler.settle()

    def in_fault(rec: dict[str, Any]) -> bool:
        return any(a - 1.0 <= rec["t_end"] and rec["t_start"] <= b for a, b in faults)

    kinds = collections.Counter(r["kind"] for r in records)
    outside = collections.Counter(r["kind"] for r in records if not in_fault(r))
    inside = collections.Counter(r["kind"] for r in records if in_fault(r))
    clean = {"ok", "blocked", "steered", "clean_error", "dropped"}
    # memory over the fault-free soak: its middle against its end (the first half is warm-up:
    # imports, connection pools, the allocator's high-water mark of concurrent image decodes)
    rss = [(s["t"], s["rss_mib"]) for s in sampler.samples]
    d = args.duration
    early = [v for t, v in rss if 0.45 * d <= t < 0.55 * d]
    late = [v for t, v in rss if 0.9 * d <= t < d]
    return {
        "requests": len(records), "kinds": dict(kinds), "kinds_outside_faults": dict(outside),
        "kinds_inside_faults": dict(inside),
        "errors_outside_faults": sum(v for k, v in outside.items() if k not in ("ok", "blocked", "steered", "dropped")),
        "unclean": sum(v for k, v in kinds.items() if k not in clean),
        "unclean_examples": [r for r in records if r["kind"] not in clean][:10],
        "error_messages": dict(collections.Counter(f"{r['kind']}: {(r['error'] or '')[:70]}" for r in records
                                                   if r["error"]).most_common(12)),
        "errors_outside_faults_examples": [r for r in records if not in_fault(r)
                                           and r["kind"] not in ("ok", "blocked", "steered", "dropped")][:10],
        "fault_windows": faults, "events": sampler.events, "samples": sampler.samples,
        "rss_early_mib": statistics.median(early) if early else None,
        "rss_late_mib": statistics.median(late) if late else None,
        "rss_end_mib": rss[-1][1] if rss else None,
        "requests_in_soak": sum(1 for r in records if r["t_end"] < d),
        "settled_after_run": settled, "settled_after_client_close": after_close,
        "e2e_p99_s": sorted(r["e2e"] for r in records if r["e2e"])[int(0.99 * (len(records) - 1))] if records else None,
    }


async def part2(args: argparse.Namespace) -> dict[str, Any]:
    rate = 20.0
    replay = start_replay(FIXTURES_DIR / "tiny-mlrm-vl.jsonl", tok_rate=rate, name="soak-replay")
    rport = int(replay.url.rsplit(":", 1)[1])
    gw = start_gateway(replay.url, detector=args.detector, name="soak-gw-replay",
                       env={"THOUGHTGUARD_UPSTREAM__READ_TIMEOUT_S": str(args.replay_read_timeout)})
    out: dict[str, Any] = {"read_timeout_s": args.replay_read_timeout, "tok_rate": rate}
    try:
        sampler = Sampler(gw, rport)
        client = new_client(timeout=args.replay_read_timeout + 30)
        model = "tiny-mlrm-vl"
        body = chat_body(model, scripted_messages("benign_math"), max_tokens=256)
        ctl = httpx.Client(base_url=replay.url, timeout=5)
        stats = lambda: ctl.get("/control/stats").json()  # noqa: E731
        baseline = await sampler.settle()
        out["baseline"] = baseline

        # (a) stall forever after 3 frames: every stream must end within the read timeout
        ctl.post("/control/stall", json={"seconds": -1, "after_frames": 3})
        t0 = time.monotonic()
        res = await asyncio.gather(*(stream_chat(client, gw.url, body, timeout=args.replay_read_timeout + 30)
                                     for _ in range(args.replay_streams)))
        ends = [r.end - r.start for r in res if r.end is not None]
        out["stall"] = {"streams": len(res), "kinds": dict(collections.Counter(classify(r, True) for r in res)),
                        "end_after_s_max": max(ends), "end_after_s_min": min(ends),
                        "bound_s": args.replay_read_timeout + 2.0,
                        "within_bound": max(ends) <= args.replay_read_timeout + 2.0,
                        "wall_s": time.monotonic() - t0, "error_sample": res[0].error}
        ctl.post("/control/reset")
        await asyncio.sleep(0.5)
        out["stall"]["replay_active_after"] = stats()["active"]
        r = await stream_chat(client, gw.url, body)
        out["stall"]["next_request"] = classify(r, True)
        out["stall"]["settle"] = await sampler.settle()
        log(f"stall: {out['stall']['kinds']} ended after {min(ends):.1f}-{max(ends):.1f}s, next {out['stall']['next_request']}")

        # (b) the upstream connection is cut mid-stream
        ctl.post("/control/cut", json={"after_frames": 5})
        res = await asyncio.gather(*(stream_chat(client, gw.url, body, timeout=30) for _ in range(args.replay_streams)))
        ctl.post("/control/reset")
        ends = [r.end - r.start for r in res if r.end is not None]
        r = await stream_chat(client, gw.url, body)
        out["cut"] = {"streams": len(res), "kinds": dict(collections.Counter(classify(x, True) for x in res)),
                      "end_after_s_max": max(ends), "error_sample": res[0].error, "next_request": classify(r, True),
                      "settle": await sampler.settle()}
        log(f"cut: {out['cut']['kinds']} ended within {max(ends):.2f}s, next {out['cut']['next_request']}")

        # (c) clients drop mid-stream: every upstream stream must be aborted
        before = stats()
        long_body = chat_body(model, scripted_messages("unsafe_reasoning"), max_tokens=256, mode="live")
        res = await asyncio.gather(*(stream_chat(client, gw.url, long_body if i % 2 else body, drop_after_chunks=4)
                                     for i in range(args.replay_streams * 2)))
        deadline = time.monotonic() + 10
        while stats()["active"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        after = stats()
        out["drops"] = {"streams": len(res), "kinds": dict(collections.Counter(classify(x, True) for x in res)),
                        "upstream_started": after["started"] - before["started"],
                        "upstream_aborted": after["aborted"] - before["aborted"],
                        "upstream_completed": after["completed"] - before["completed"],
                        "upstream_active_after": after["active"], "settle": await sampler.settle()}
        log(f"drops: {out['drops']['kinds']} upstream aborted {out['drops']['upstream_aborted']}, "
            f"active after {after['active']}")
        # (d) memory per request: batches of short requests, normal and cut mid-stream; RSS after each
        proc = psutil.Process(gw.pid)
        short = chat_body(model, scripted_messages("benign"), max_tokens=6)
        image = chat_body(model, scripted_messages("benign_image"), max_tokens=6)
        mem: dict[str, list[float]] = {"normal": [], "cut": [], "image": []}
        await run_batch(client, gw.url, [short, image] * (args.leak_batch // 2), 64, timeout=30)  # warm-up
        for kind in ("normal", "cut", "image"):
            if kind == "cut":
                ctl.post("/control/cut", json={"after_frames": 3})
            for _ in range(args.leak_batches):
                body = image if kind == "image" else short
                await run_batch(client, gw.url, [body] * args.leak_batch, 64, timeout=30)
                mem[kind].append(round(proc.memory_info().rss / 2**20, 2))
            ctl.post("/control/reset")
        tail = lambda v: (v[-1] - v[len(v) // 2]) / max(1, len(v) - 1 - len(v) // 2) * (1000 / args.leak_batch)  # noqa: E731
        out["leak_probe"] = {"batch": args.leak_batch, "rss_mib": mem,
                             "mib_per_1000_requests_second_half": {k: round(tail(v), 3) for k, v in mem.items()}}
        log(f"leak probe: {out['leak_probe']}")
        await client.aclose()
        out["final"] = await sampler.settle()
        out["samples"] = sampler.samples
    finally:
        gw.stop()
        replay.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=180.0, help="seconds of the soak against vLLM")
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--drops", type=int, default=16)
    p.add_argument("--stall", type=float, default=15.0, help="seconds vLLM is frozen (> --read-timeout)")
    p.add_argument("--read-timeout", type=float, default=8.0, help="the gateway's upstream read timeout in the soak")
    p.add_argument("--replay-read-timeout", type=float, default=5.0)
    p.add_argument("--replay-streams", type=int, default=16)
    # 8: with the upstream over aiohttp, image requests warm up over ~1,500 requests (RSS +10 MiB,
    # then flat: 0.04 MiB per 1,000 over batches 5-8); a 4-batch probe judged the warm-up as a trend
    p.add_argument("--leak-batches", type=int, default=8)
    p.add_argument("--leak-batch", type=int, default=500)
    p.add_argument("--detector", default=None, help="gateway detector (default: the gateway's own; lexicon while the learned artifact is missing)")
    p.add_argument("--skip-vllm", action="store_true", help="only part 2 (replay upstream)")
    args = p.parse_args(argv)
    args.detector = args.detector or default_detector()
    data: dict[str, Any] = {"benchmark": "soak", "machine": machine_info(), "detector": detector_label(args.detector),
                            "args": vars(args)}
    if not args.skip_vllm:
        vllm = start_vllm(TINY_MODEL)
        gw = None
        try:
            gw = start_gateway(vllm.url, detector=args.detector, name="soak-gw",
                               implicit_think=serve_hints(TINY_MODEL)["implicit_think"],
                               env={"THOUGHTGUARD_UPSTREAM__READ_TIMEOUT_S": str(args.read_timeout)})
            data["part1"] = asyncio.run(part1(args, vllm, gw, TINY_MODEL.name))
            data["part1"]["gateway_restarted"] = not gw.alive()
        finally:
            if gw is not None:
                gw.stop()
            vllm.stop()
        plots.soak(data["part1"], ROOT / "docs" / "img" / "bench_soak.png")
    data["part2"] = asyncio.run(part2(args))
    save("soak-replay" if args.skip_vllm else "soak", data)
    print(summary(data))
    ok = verdict(data)
    raise SystemExit(0 if ok else 1)


def verdict(data: dict[str, Any]) -> bool:
    ok = True
    p1 = data.get("part1")
    if p1:
        ok &= p1["errors_outside_faults"] == 0 and p1["unclean"] == 0
        ok &= p1["settled_after_client_close"]["settled"]
        if p1["rss_early_mib"] and p1["rss_late_mib"]:
            grow = p1["rss_late_mib"] - p1["rss_early_mib"]
            ok &= grow <= min(10.0, 0.05 * p1["rss_early_mib"])
    p2 = data["part2"]
    ok &= p2["stall"]["within_bound"] and p2["stall"]["next_request"] == "ok"
    ok &= p2["cut"]["next_request"] == "ok"
    ok &= p2["drops"]["upstream_active_after"] == 0 and p2["final"]["settled"]
    ok &= all(k in ("clean_error",) for k in p2["stall"]["kinds"]) and all(k in ("clean_error",) for k in p2["cut"]["kinds"])
    if "leak_probe" in p2:
        ok &= all(v < 1.0 for v in p2["leak_probe"]["mib_per_1000_requests_second_half"].values())
    return bool(ok)


def summary(data: dict[str, Any]) -> str:
    lines = []
    p1 = data.get("part1")
    if p1:
        lines += [f"soak: {p1['requests']} requests, kinds {p1['kinds']}",
                  f"  outside faults: {p1['kinds_outside_faults']} -> errors {p1['errors_outside_faults']}",
                  f"  inside faults: {p1['kinds_inside_faults']}; unclean {p1['unclean']}",
                  f"  error messages: {p1.get('error_messages')}",
                  f"  errors outside faults: {p1.get('errors_outside_faults_examples')}",
                  f"  RSS over the fault-free soak: middle {p1['rss_early_mib']} MiB, end "
                  f"{p1['rss_late_mib']} MiB; at the end of the faults {p1.get('rss_end_mib')} MiB",
                  f"  after the run: {p1['settled_after_run']}",
                  f"  after the client closed: {p1['settled_after_client_close']}"]
        lines += [f"  event t={e['t']}: {e['what']} {({k: v for k, v in e.items() if k not in ('t', 'what')})}" for e in p1["events"]]
    p2 = data["part2"]
    for k in ("stall", "cut", "drops"):
        lines.append(f"{k}: " + str({kk: vv for kk, vv in p2[k].items() if kk != 'settle'}) + f" settle={p2[k]['settle']}")
    if "leak_probe" in p2:
        lines.append(f"leak probe: {p2['leak_probe']}")
    lines.append(f"final: {p2['final']}")
    lines.append("VERDICT: " + ("pass" if verdict(data) else "FAIL"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
