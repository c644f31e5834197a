"""Benchmark 3: what one guard check costs, per detector tier, on one core.

The windows are the ones the gateway really checks: the shipped policy's windowing (a check at a
sentence boundary once ``min_tokens`` wait, at the latest every ``every_tokens``, with
``context_chars`` of checked text carried along) run over the dev traces (``guard.datasets``,
reasoning then answer, about one token per event) and the tiny model's scripts. Each detector
that exists is timed on every window, one window per call as the monitor calls it, pinned to a
single core with BLAS threads at 1. Reported: p50/p99 per check, checks/s, and the hold-back
delay this implies for a 50 tok/s stream in ``buffered`` mode (a token waits for its window to
fill, then for the check), next to the monitor's own bookkeeping per token.

The intent reader (a MiniLM cross-encoder, 30-100x a static tier's cost per check) is timed per
window the same way on a seeded sample of the windows (``--reader-windows``), and also as the
gateway runs it under load: many streams replayed at once through their own ``Monitor`` over one
shared reader (``threads=1``, still one core), whose ``MicroBatcher`` runs the checks that fall due
together as one batch. That gives streamed tokens per second per core at saturation (how many
40-50 tok/s streams one core can guard) and the batch sizes it reached, which per-check latency
alone does not say: a batch may cost more or less per window than single checks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import time
from typing import Any, Sequence

PIN_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
GOAL_READER_CHECK_P99_MS = 30.0
GOAL_READER_TOKENS_PER_S = 1500.0  # streamed tokens per second per core, batched


def _pin() -> int:
    """Re-exec with single-threaded BLAS, then pin this process to one core."""
    if any(os.environ.get(k) != "1" for k in PIN_ENV):
        os.execve(sys.executable, [sys.executable, "-m", "bench.guard_cost", *sys.argv[1:]],
                  {**os.environ, **{k: "1" for k in PIN_ENV}})
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def windows_of(traces: Sequence[Any], policy: Any) -> list[Any]:
    """The windows the monitor checks over each whole trace (a detector that never objects)."""
    from guard.detectors.base import Detector, Window
    from guard.monitor import Monitor
    from guard.replay import events
    from guard.verdict import Detection

    seen: list[Window] = []

    class Recorder(Detector):
        name = "recorder"

        async def detect(self, windows: Sequence[Window]) -> list[Detection]:
            seen.extend(windows)
            return [Detection(unsafe=0.0, detector=self.name) for _ in windows]

    async def run() -> None:
        for t in traces:
            mon = Monitor(Recorder(), policy, prompt=t.prompt)
            for ev in events(t.reasoning, t.answer):
                await mon.feed(ev)

    asyncio.run(run())
    return seen


def detectors(intent_artifact: str | None = None, max_batch: int | None = None) -> dict[str, Any]:
    """Every fast tier the gateway can be configured with, built as the gateway builds it (the intent
    reader from ``intent_artifact`` instead of the shipped directory, or with ``max_batch`` instead
    of the gateway's default batch size, when given; one reader thread, the gateway's default)."""
    from typing import get_args

    from bench.common import guard_stack
    from guard.detectors.stack import build
    from server.config import GuardSettings

    out: dict[str, Any] = {}
    defaults = GuardSettings()
    for name in get_args(GuardSettings.model_fields["detector"].annotation) or ("lexicon", "learned"):
        try:
            if name == "intent" and (intent_artifact or max_batch):
                out[name] = build(name, intent_artifact, threads=defaults.reader_threads,
                                  max_batch=max_batch or defaults.max_batch)
            else:
                out[name] = guard_stack(name)[0]
        except Exception as exc:  # noqa: BLE001 - a trained artifact may not exist yet
            out[name] = f"not available: {type(exc).__name__}: {str(exc)[:120]}"
    out["guard model (Llama Guard 3 / Qwen3Guard-Gen)"] = (
        "not measured: needs a guard model served by vLLM, which this CPU machine cannot host")
    return out


def time_checks(dets: dict[str, Any], windows: Sequence[Any], passes: int,
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Per-check seconds of each detector; passes interleave the detectors so drift hits all alike.

    ``cpu``, when given, also gets each check's process CPU seconds (the worker thread's included):
    on a machine something else also loads, that is what a check costs, while wall time includes
    waiting for the core."""

    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {name: [] for name in dets}
        for det in dets.values():
            for w in windows[:50]:  # warm-up (caches, lazy imports)
                await det.detect([w])
        for _ in range(passes):
            for name, det in dets.items():
                times = out[name]
                for w in windows:
                    c0 = time.process_time() if cpu is not None else 0.0
                    t0 = time.perf_counter()
                    await det.detect([w])
                    times.append(time.perf_counter() - t0)
                    if cpu is not None:
                        cpu.setdefault(name, []).append(time.process_time() - c0)
        return out

    return asyncio.run(run())


def monitor_cost(traces: Sequence[Any], policy: Any, det: Any) -> dict[str, float]:
    """Seconds per streamed token through a whole Monitor (windowing + the detector)."""
    from guard.monitor import Monitor
    from guard.replay import events

    evs = [(t.prompt, events(t.reasoning, t.answer)) for t in traces]
    n = sum(len(e) for _, e in evs)

    async def run() -> float:
        t0 = time.perf_counter()
        for prompt, es in evs:
            mon = Monitor(det, policy, prompt=prompt)
            for ev in es:
                await mon.feed(ev)
        return time.perf_counter() - t0

    asyncio.run(run())  # warm
    return {"tokens": n, "seconds_per_token": asyncio.run(run()) / n}


def batched(det: Any) -> bool:
    """Whether the detector gathers concurrent checks into batches (the intent reader)."""
    return hasattr(det, "batcher")


def concurrent_throughput(traces: Sequence[Any], policy: Any, det: Any, streams: int,
                          seconds: float) -> dict[str, Any]:
    """Streamed tokens per second when ``streams`` monitors share ``det`` in one event loop.

    Each stream replays traces back to back as fast as its monitor takes them (a closed loop, no
    pacing), so this is the ceiling of the (one) core the process is pinned to. A monitor does not
    yield between checks, so the streams reach their checks in turn, and what falls due while the
    reader runs a batch joins the next one, as in the gateway. A stream the guard cuts ends there
    and the next trace starts. Check latency here includes the wait for a batch.
    """
    from guard.monitor import Monitor, MonitorStats
    from guard.replay import events

    evs = [(t.prompt, events(t.reasoning, t.answer)) for t in traces]
    sizes: list[int] = getattr(getattr(det, "batcher", None), "batches", [])
    sizes.clear()
    order = itertools.count()
    stats: list[MonitorStats] = []

    async def stream(deadline: float) -> None:
        while time.perf_counter() < deadline:
            prompt, es = evs[next(order) % len(evs)]
            mon = Monitor(det, policy, prompt=prompt)
            stats.append(mon.stats)
            for ev in es:
                if mon.stopped is not None or time.perf_counter() >= deadline:
                    break
                await mon.feed(ev)

    async def run() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(stream(t0 + seconds) for _ in range(streams)))
        return time.perf_counter() - t0

    cpu0 = time.process_time()
    wall = asyncio.run(run())
    cpu = time.process_time() - cpu0
    tokens = sum(s.tokens for s in stats)
    checks = [x for s in stats for x in s.check_seconds]
    return {
        "streams": streams, "seconds": wall, "cpu_seconds": cpu, "tokens": tokens, "traces_started": len(stats),
        "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu if cpu else None,
        "checks": len(checks), "checks_per_s": len(checks) / wall,
        "check_latency_p50_ms": float(statistics.median(checks)) * 1000 if checks else None,
        "check_latency_p99_ms": sorted(checks)[int(0.99 * (len(checks) - 1))] * 1000 if checks else None,
        "detector_errors": sum(s.detector_errors for s in stats),
        "batches": len(sizes), "batch_mean": statistics.mean(sizes) if sizes else None,
        "batch_p50": statistics.median(sizes) if sizes else None, "batch_max": max(sizes, default=None),
        "batch_sizes": {str(k): sizes.count(k) for k in sorted(set(sizes))},
    }


def reader_batch_cost(det: Any, windows: Sequence[Any], sizes: Sequence[int] = (1, 4, 8, 16),
                      n: int = 64) -> dict[str, float]:
    """Milliseconds per window of the reader alone (no batcher, no event loop) run in batches of
    each size over the same ``n`` windows: whether a bigger batch is cheaper per window on this
    core, which is what batching across streams can buy at most."""
    pairs = [(w.prompt, w.full) for w in windows[:n]]
    det.reader(pairs[:8])  # warm
    out: dict[str, float] = {}
    for size in sizes:
        t0 = time.perf_counter()
        for i in range(0, len(pairs), size):
            det.reader(pairs[i:i + size])
        out[str(size)] = (time.perf_counter() - t0) / len(pairs) * 1000
    return out


def implied_holdback(windows: Sequence[Any], check_p50: float, check_p99: float, tok_rate: float,
                     lookahead: int = 0) -> dict[str, float]:
    """Per-token wait in buffered mode at ``tok_rate``: fill of its window + the check, then the
    ``lookahead`` windows after it (each a mean window's fill + a check).

    Stream windows only: a wary stream's request reading is a check but holds no tokens, and a
    wary stream's wait is the rest of its generation, which depends on the model, not the guard.
    """
    from guard.events import Stage
    from guard.replay import pieces

    gap = 1.0 / tok_rate
    waits: list[float] = []
    sizes: list[int] = []
    for w in windows:
        if w.stage is Stage.PROMPT:
            continue
        n = max(1, len(pieces(w.text)))
        sizes.append(n)
        waits += [(n - k) * gap for k in range(1, n + 1)]
    fill50, fill99 = statistics.median(waits), sorted(waits)[int(0.99 * (len(waits) - 1))]
    window_fill = statistics.mean(sizes) * gap
    return {
        "window_tokens_mean": statistics.mean(sizes),
        "fill_wait_p50_s": fill50,
        "fill_wait_p99_s": fill99,
        "lookahead_windows": lookahead,
        "lookahead_wait_s": lookahead * (window_fill + check_p50),
        "holdback_p50_s": fill50 + check_p50 + lookahead * (window_fill + check_p50),
        "holdback_p99_s": fill99 + check_p99 + lookahead * (window_fill + check_p99),
        "check_share_of_token_gap_p99": check_p99 / gap,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.guard_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traces", type=int, default=600, help="dev traces sampled (all sets)")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--tok-rate", type=float, default=50.0)
    p.add_argument("--intent-artifact", default=None,
                   help="the intent reader's directory (default: the shipped guard/artifacts/intent, as the gateway)")
    p.add_argument("--reader-windows", type=int, default=2000,
                   help="windows (a seeded sample) the intent reader is timed on per pass; 0 = all")
    p.add_argument("--reader-traces", type=int, default=100,
                   help="traces the intent reader's monitor cost per token is measured on")
    p.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64],
                   help="concurrent streams over one intent reader, for its batched throughput")
    p.add_argument("--stream-seconds", type=float, default=15.0, help="seconds per concurrency level")
    p.add_argument("--max-batch", type=int, default=None,
                   help="the intent reader's checks per batch (default: the gateway's, guard.max_batch)")
    args = p.parse_args(argv)
    core = _pin()

    import numpy as np

    from bench.common import CONVERSATIONS, fmt, log, machine_info, save
    from guard.datasets.trace import Trace

    from bench.common import gateway_default_detector, guard_stack

    policy = guard_stack("lexicon")[1]
    traces: list[Trace] = [Trace(f"scripted/{c['id']}", c["prompt"], c["reasoning"], c["answer"], c["label"])
                           for c in CONVERSATIONS.values()]
    try:
        from guard.datasets import split_traces

        dev = split_traces("dev")
        random.Random(0).shuffle(dev)
        traces += dev[: args.traces]
        source = f"{len(traces) - len(CONVERSATIONS)} dev traces (guard.datasets, sampled) + {len(CONVERSATIONS)} scripts"
    except Exception as exc:  # noqa: BLE001
        source = f"{len(CONVERSATIONS)} scripts only (dev traces unavailable: {exc!r})"
    windows = windows_of(traces, policy)
    log(f"{len(windows)} windows from {source}; pinned to core {core}")
    result: dict[str, Any] = {}
    found = detectors(args.intent_artifact, args.max_batch)
    timings = time_checks({n: d for n, d in found.items() if not isinstance(d, str) and not batched(d)},
                          windows, args.passes)
    slow = {n: d for n, d in found.items() if not isinstance(d, str) and batched(d)}
    cpu_timings: dict[str, list[float]] = {}
    reader_windows = windows
    if slow and args.reader_windows and args.reader_windows < len(windows):
        reader_windows = random.Random(1).sample(windows, args.reader_windows)
    if slow:
        log(f"timing {', '.join(slow)} on {len(reader_windows)} windows x {args.passes} passes")
        timings.update(time_checks(slow, reader_windows, args.passes, cpu_timings))
    for name, det in found.items():
        if isinstance(det, str):
            result[name] = {"available": False, "reason": det}
            log(f"{name}: {det}")
            continue
        secs = timings[name]
        p50, p99 = float(np.percentile(secs, 50)), float(np.percentile(secs, 99))
        mon = monitor_cost(traces[: args.reader_traces] if batched(det) else traces, policy, det)
        result[name] = {
            "available": True, "checks": len(secs),
            "check_p50_ms": p50 * 1000, "check_p99_ms": p99 * 1000, "check_mean_ms": statistics.mean(secs) * 1000,
            "checks_per_s": 1.0 / statistics.mean(secs),
            "window_chars_mean": statistics.mean(len(w.full) for w in (reader_windows if batched(det) else windows)),
            "monitor_us_per_token": mon["seconds_per_token"] * 1e6,
            "implied_at_tok_rate": implied_holdback(windows, p50, p99, args.tok_rate,
                                                    policy.thresholds.lookahead_windows),
        }
        log(f"{name}: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, {1 / statistics.mean(secs):.0f} checks/s, "
            f"monitor {mon['seconds_per_token'] * 1e6:.1f} us/token")
        if batched(det):
            result[name]["timed_windows"] = len(reader_windows)
            result[name]["max_batch"] = det.batcher.max_batch
            cpu_secs = cpu_timings.get(name) or [float("nan")]
            result[name]["check_cpu_p50_ms"] = float(np.percentile(cpu_secs, 50)) * 1000
            result[name]["check_cpu_p99_ms"] = float(np.percentile(cpu_secs, 99)) * 1000
            log(f"{name}: CPU per check p50 {result[name]['check_cpu_p50_ms']:.3f} ms, "
                f"p99 {result[name]['check_cpu_p99_ms']:.3f} ms")
            result[name]["monitor_traces"] = min(len(traces), args.reader_traces)
            if hasattr(det, "reader"):
                result[name]["reader_ms_per_window_by_batch"] = reader_batch_cost(det, reader_windows)
                log(f"{name} alone, ms per window by batch size: {result[name]['reader_ms_per_window_by_batch']}")
            result[name]["concurrency"] = []
            for n in args.streams:
                row = concurrent_throughput(traces, policy, det, n, args.stream_seconds)
                result[name]["concurrency"].append(row)
                log(f"{name}, {n} streams: {row['tokens_per_s']:.0f} tokens/s on one core "
                    f"({row['cpu_seconds'] / row['seconds']:.2f} of it busy), {row['checks_per_s']:.0f} checks/s, "
                    f"batch mean {row['batch_mean'] or 0:.1f} max {row['batch_max']}, check latency p50 / p99 "
                    f"{row['check_latency_p50_ms'] or 0:.1f} / {row['check_latency_p99_ms'] or 0:.1f} ms, "
                    f"errors {row['detector_errors']}")
    from guard.detectors.null import NullDetector

    result["none (monitor only)"] = {"available": True,
                                     "monitor_us_per_token": monitor_cost(traces, policy, NullDetector())["seconds_per_token"] * 1e6}
    data = {"benchmark": "guard_cost", "machine": machine_info(), "core": core, "windows": len(windows),
            "gateway_default": gateway_default_detector(),
            "source": source, "policy_window": policy.window.model_dump(), "tok_rate": args.tok_rate,
            "intent_artifact": args.intent_artifact or "guard/artifacts/intent (shipped)",
            "goals": {"reader_check_p99_ms_max": GOAL_READER_CHECK_P99_MS,
                      "reader_tokens_per_s_per_core_min": GOAL_READER_TOKENS_PER_S},
            "args": vars(args), "detectors": result}
    save("guard_cost", data)
    print(markdown(data))
    _ = fmt


def markdown(data: dict[str, Any]) -> str:
    from bench.common import fmt

    rate = data["tok_rate"]
    lines = [f"| detector | check p50 (ms) | check p99 (ms) | checks/s (1 core) | monitor + detector per token (µs) | "
             f"implied hold-back at {rate:.0f} tok/s p50 / p99 (ms) | of which the check, p99 (ms) |",
             "|---|---|---|---|---|---|---|"]
    for name, d in data["detectors"].items():
        if not d.get("available"):
            lines.append(f"| {name} | {d.get('reason')} | | | | | |")
            continue
        if "check_p50_ms" not in d:
            lines.append(f"| {name} | - | - | - | {d['monitor_us_per_token']:.1f} | - | - |")
            continue
        imp = d["implied_at_tok_rate"]
        lines.append(f"| {name} | {d['check_p50_ms']:.3f} | {d['check_p99_ms']:.3f} | {d['checks_per_s']:.0f} | "
                     f"{d['monitor_us_per_token']:.1f} | {fmt(imp['holdback_p50_s'] * 1000, 0)} / {fmt(imp['holdback_p99_s'] * 1000, 0)} | "
                     f"{d['check_p99_ms']:.3f} |")
    for name, d in data["detectors"].items():
        if d.get("concurrency"):
            lines += ["", f"{name}: {d['timed_windows']} windows timed per pass above; max_batch {d.get('max_batch')}; "
                      "CPU per check p50 / p99 "
                      f"{fmt(d.get('check_cpu_p50_ms'), 3)} / {fmt(d.get('check_cpu_p99_ms'), 3)} ms. Batched throughput "
                      f"on one core (goals: check p99 ≤ {GOAL_READER_CHECK_P99_MS:.0f} ms, ≥ "
                      f"{GOAL_READER_TOKENS_PER_S:,.0f} streamed tokens/s per core):", "",
                      "| streams | tokens/s (wall) | core busy | tokens per CPU-s | checks/s | batches: mean / p50 / max | "
                      "check latency p50 / p99, with the batch wait (ms) | detector errors |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in d["concurrency"]:
                lines.append(f"| {r['streams']} | {r['tokens_per_s']:.0f} | {r['cpu_seconds'] / r['seconds']:.2f} | "
                             f"{fmt(r['tokens_per_cpu_s'], 0)} | "
                             f"{r['checks_per_s']:.0f} | {fmt(r['batch_mean'], 1)} / {fmt(r['batch_p50'], 0)} / "
                             f"{r['batch_max']} | {fmt(r['check_latency_p50_ms'], 1)} / "
                             f"{fmt(r['check_latency_p99_ms'], 1)} | {r['detector_errors']} |")
            if d.get("reader_ms_per_window_by_batch"):
                by = d["reader_ms_per_window_by_batch"]
                lines += ["", "The reader alone (no batcher), ms per window by batch size: "
                          + ", ".join(f"{k}: {v:.2f}" for k, v in by.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
