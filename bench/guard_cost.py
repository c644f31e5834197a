"""Benchmark 3: what one guard check costs, per detector tier, on one core.

The windows are the ones the gateway really checks: the shipped policy's windowing (a check at a
sentence boundary once ``min_tokens`` wait, at the latest every ``every_tokens``, with
``context_chars`` of checked text carried along) run over the dev traces (``guard.datasets``,
reasoning then answer, about one token per event) and the tiny model's scripts. Each detector
that exists is timed on every window, one window per call as the monitor calls it, pinned to a
single core with BLAS threads at 1. Reported: p50/p99 per check, checks/s, and the hold-back
delay this implies for a 50 tok/s stream in ``buffered`` mode (a token waits for its window to
fill, then for the check), next to the monitor's own bookkeeping per token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from typing import Any, Sequence

PIN_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


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


def detectors() -> dict[str, Any]:
    """Every fast tier the gateway can be configured with, built as the gateway builds it."""
    from typing import get_args

    from bench.common import guard_stack
    from server.config import GuardSettings

    out: dict[str, Any] = {}
    for name in get_args(GuardSettings.model_fields["detector"].annotation) or ("lexicon", "learned"):
        try:
            out[name] = guard_stack(name)[0]
        except Exception as exc:  # noqa: BLE001 - the learned artifact may not exist yet
            out[name] = f"not available: {type(exc).__name__}: {str(exc)[:120]}"
    out["guard model (Llama Guard 3 / Qwen3Guard-Gen)"] = (
        "not measured: needs a guard model served by vLLM, which this CPU machine cannot host")
    return out


def time_checks(dets: dict[str, Any], windows: Sequence[Any], passes: int) -> dict[str, list[float]]:
    """Per-check seconds of each detector; passes interleave the detectors so drift hits all alike."""

    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {name: [] for name in dets}
        for det in dets.values():
            for w in windows[:50]:  # warm-up (caches, lazy imports)
                await det.detect([w])
        for _ in range(passes):
            for name, det in dets.items():
                times = out[name]
                for w in windows:
                    t0 = time.perf_counter()
                    await det.detect([w])
                    times.append(time.perf_counter() - t0)
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
    found = detectors()
    timings = time_checks({n: d for n, d in found.items() if not isinstance(d, str)}, windows, args.passes)
    for name, det in found.items():
        if isinstance(det, str):
            result[name] = {"available": False, "reason": det}
            log(f"{name}: {det}")
            continue
        secs = timings[name]
        p50, p99 = float(np.percentile(secs, 50)), float(np.percentile(secs, 99))
        mon = monitor_cost(traces, policy, det)
        result[name] = {
            "available": True, "checks": len(secs),
            "check_p50_ms": p50 * 1000, "check_p99_ms": p99 * 1000, "check_mean_ms": statistics.mean(secs) * 1000,
            "checks_per_s": 1.0 / statistics.mean(secs),
            "window_chars_mean": statistics.mean(len(w.full) for w in windows),
            "monitor_us_per_token": mon["seconds_per_token"] * 1e6,
            "implied_at_tok_rate": implied_holdback(windows, p50, p99, args.tok_rate,
                                                    policy.thresholds.lookahead_windows),
        }
        log(f"{name}: p50 {p50 * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, {1 / statistics.mean(secs):.0f} checks/s, "
            f"monitor {mon['seconds_per_token'] * 1e6:.1f} us/token")
    from guard.detectors.null import NullDetector

    result["none (monitor only)"] = {"available": True,
                                     "monitor_us_per_token": monitor_cost(traces, policy, NullDetector())["seconds_per_token"] * 1e6}
    data = {"benchmark": "guard_cost", "machine": machine_info(), "core": core, "windows": len(windows),
            "gateway_default": gateway_default_detector(),
            "source": source, "policy_window": policy.window.model_dump(), "tok_rate": args.tok_rate, "detectors": result}
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
    return "\n".join(lines)


if __name__ == "__main__":
    main()
