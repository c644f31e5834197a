"""Benchmark 1: gateway overhead, measured side by side against the real vLLM.

The same workload (the tiny model's benign scripts by default, temperature 0, so every target
generates the same tokens) is sent at concurrency 1, 8 and 32 to:

* ``direct``: vLLM itself,
* ``guard-off``: thoughtguard with ``--no-guard`` (pass-through),
* ``buffered`` / ``hidden`` / ``live``: thoughtguard with the guard on, the hold-back mode chosen
  per request (``thoughtguard.mode``), detector = the gateway's default.

Targets are interleaved: every round runs each concurrency level on every target in a fresh
random order, so drift on a shared machine hits all of them alike. Reported per target and
level: TTFT (first visible text), TTFAT (first answer text), ITL (gaps between text chunks as
the client sees them), output tokens/s (completion tokens of a batch / its wall time), and the
ratio of each to ``direct`` (throughput ratios are taken per round, then the median).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import statistics
import time
from typing import Any

from bench import plots
from bench.common import (
    TINY_MODEL,
    ROOT,
    detector_label,
    default_detector,
    chat_body,
    fmt,
    log,
    machine_info,
    new_client,
    pin_self,
    pct,
    ratio,
    run_batch,
    save,
    scripted_messages,
    serve_hints,
    start_gateway,
    start_vllm,
)
from loadtest.sse import StreamResult

PROMPTS = ["benign", "benign_math"]
GOAL_TTFT_RATIO = 1.02
GOAL_THROUGHPUT_RATIO = 0.97


def _summary(results: list[StreamResult], walls: list[tuple[float, int]]) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    ttfat = [r.ttfat for r in ok if r.ttfat is not None]
    itl = [g for r in ok for g in r.itl]
    e2e = [r.e2e for r in ok if r.e2e is not None]
    # time per output token after the first visible one (vLLM's TPOT): robust to frames that
    # arrive coalesced (ITL 0) and to the guard releasing a window as one chunk
    tpot = [(r.e2e - r.ttft) / (r.completion_tokens - 1) for r in ok
            if r.e2e is not None and r.ttft is not None and r.completion_tokens > 1]
    tput = [tokens / wall for wall, tokens in walls if wall > 0]
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_messages": dict(collections.Counter((r.error or "")[:120] for r in results if r.error is not None)),
        "blocked": sum(r.outcome == "blocked" for r in ok),
        "ttft_p50": pct(ttft, 50), "ttft_p99": pct(ttft, 99),
        "ttfat_p50": pct(ttfat, 50), "ttfat_p99": pct(ttfat, 99),
        "itl_p50": pct(itl, 50), "itl_p99": pct(itl, 99),
        "tpot_p50": pct(tpot, 50), "tpot_p99": pct(tpot, 99),
        "e2e_p50": pct(e2e, 50), "e2e_p99": pct(e2e, 99),
        "chunks_per_request": statistics.mean([len(r.chunk_times) for r in ok]) if ok else None,
        "tokens_per_request": statistics.mean([r.completion_tokens for r in ok]) if ok else None,
        "tokens_per_s": (sum(t for _, t in walls) / sum(w for w, _ in walls)) if walls else None,
        "tokens_per_s_rounds": tput,
    }


async def _run(args: argparse.Namespace, targets: dict[str, tuple[str, str | None]], model: str) -> dict[str, Any]:
    rng = random.Random(args.seed)
    client = new_client()
    raw: dict[str, dict[int, list[StreamResult]]] = {t: {c: [] for c in args.concurrency} for t in targets}
    walls: dict[str, dict[int, list[tuple[float, int]]]] = {t: {c: [] for c in args.concurrency} for t in targets}

    def bodies(n: int, mode: str | None) -> list[dict[str, Any]]:
        return [chat_body(model, scripted_messages(PROMPTS[i % len(PROMPTS)]), max_tokens=args.max_tokens, mode=mode)
                for i in range(n)]

    log("warm-up")
    for name, (base, mode) in targets.items():
        await run_batch(client, base, bodies(4, mode), 4)
    t0 = time.monotonic()
    for rnd in range(args.rounds):
        for c in args.concurrency:
            order = list(targets)
            rng.shuffle(order)
            n = max(args.min_requests, args.waves * c)
            for name in order:
                base, mode = targets[name]
                results, wall = await run_batch(client, base, bodies(n, mode), c)
                raw[name][c] += results
                tokens = sum(r.completion_tokens for r in results if r.error is None)
                walls[name][c].append((wall, tokens))
                log(f"round {rnd + 1}/{args.rounds} c={c:<3} {name:<9} {n} req in {wall:5.1f}s "
                    f"{tokens / wall:6.1f} tok/s, errors {sum(r.error is not None for r in results)}"
                    + "".join(f" [{r.error[:160]}]" for r in results if r.error is not None))
    await client.aclose()
    elapsed = time.monotonic() - t0

    table: dict[str, dict[str, Any]] = {}
    for name in targets:
        table[name] = {}
        for c in args.concurrency:
            s = _summary(raw[name][c], walls[name][c])
            d = _summary(raw["direct"][c], walls["direct"][c])
            per_round = [ratio(a[1] / a[0], b[1] / b[0]) for a, b in zip(walls[name][c], walls["direct"][c])]
            s["ratio"] = {
                "ttft_p50": ratio(s["ttft_p50"], d["ttft_p50"]), "ttft_p99": ratio(s["ttft_p99"], d["ttft_p99"]),
                "ttfat_p50": ratio(s["ttfat_p50"], d["ttfat_p50"]), "ttfat_p99": ratio(s["ttfat_p99"], d["ttfat_p99"]),
                "itl_p50": ratio(s["itl_p50"], d["itl_p50"]), "itl_p99": ratio(s["itl_p99"], d["itl_p99"]),
                "tpot_p50": ratio(s["tpot_p50"], d["tpot_p50"]), "tpot_p99": ratio(s["tpot_p99"], d["tpot_p99"]),
                "e2e_p50": ratio(s["e2e_p50"], d["e2e_p50"]),
                "tokens_per_s": statistics.median([r for r in per_round if r is not None]) if per_round else None,
                "tokens_per_s_rounds": per_round,
            }
            table[name][str(c)] = s
    return {"elapsed_s": round(elapsed, 1), "table": table}


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "| target | c | TTFT p50 / p99 (ms) | TTFAT p50 (ms) | ITL p50 / p99 (ms) | TPOT p50 / p99 (ms) | tok/s | TTFT p50 / p99 ratio | TTFAT p50 ratio | TPOT p50 ratio | tok/s ratio | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ms = lambda x: fmt(None if x is None else x * 1000, 0)  # noqa: E731
    for name, rows in data["table"].items():
        for c, s in rows.items():
            r = s["ratio"]
            lines.append(
                f"| {name} | {c} | {ms(s['ttft_p50'])} / {ms(s['ttft_p99'])} | {ms(s['ttfat_p50'])} | "
                f"{ms(s['itl_p50'])} / {ms(s['itl_p99'])} | {fmt(None if s['tpot_p50'] is None else s['tpot_p50'] * 1000, 1)} / "
                f"{fmt(None if s['tpot_p99'] is None else s['tpot_p99'] * 1000, 1)} | {fmt(s['tokens_per_s'], 1)} | "
                f"{fmt(r['ttft_p50'], 2)} / {fmt(r['ttft_p99'], 2)} | {fmt(r['ttfat_p50'], 2)} | {fmt(r['tpot_p50'], 2)} | "
                f"{fmt(r['tokens_per_s'], 3)} | {s['errors']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--waves", type=int, default=2, help="requests per batch = waves x concurrency")
    p.add_argument("--min-requests", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--modes", default="buffered,hidden,live")
    p.add_argument("--detector", default=None,
                   help="default: the gateway's own (learned), lexicon while its artifact is missing")
    p.add_argument("--vllm-url", default=None, help="use a running vLLM (serving the tiny model) instead of starting one")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--isolate", action="store_true",
                   help="pin vLLM (and its OpenMP threads) to core 0, gateways and this client to core 1, as on a GPU "
                        "host where the model's compute does not share the gateway's CPU")
    args = p.parse_args(argv)
    detector = args.detector or default_detector()

    model_cpus, gw_cpus = ("0", "1") if args.isolate else (None, None)
    vllm = None if args.vllm_url else start_vllm(TINY_MODEL, cpus=model_cpus)
    vllm_url = args.vllm_url or vllm.url  # type: ignore[union-attr]
    implicit = serve_hints(TINY_MODEL)["implicit_think"]
    off = on = None
    try:
        off = start_gateway(vllm_url, guard=False, name="gw-off", implicit_think=implicit, cpus=gw_cpus)
        on = start_gateway(vllm_url, guard=True, detector=detector, name="gw-on", implicit_think=implicit, cpus=gw_cpus)
        pin_self(gw_cpus)
        targets: dict[str, tuple[str, str | None]] = {"direct": (vllm_url, None), "guard-off": (off.url, None)}
        for mode in args.modes.split(","):
            targets[mode] = (on.url, mode)
        model = TINY_MODEL.name
        data = asyncio.run(_run(args, targets, model))
    finally:
        for child in (off, on):
            if child is not None:
                child.stop()
        if vllm is not None:
            vllm.stop()
    data.update(
        benchmark="overhead", machine=machine_info(), model=TINY_MODEL.name, prompts=PROMPTS,
        detector=detector_label(detector), args=vars(args),
        goals={"ttft_ratio_max": GOAL_TTFT_RATIO, "throughput_ratio_min": GOAL_THROUGHPUT_RATIO},
    )
    name = "overhead-isolated" if args.isolate else "overhead"
    save(name, data)
    plots.overhead(data, ROOT / "docs" / "img" / f"bench_{name.replace('-', '_')}.png")
    print(markdown(data))


if __name__ == "__main__":
    main()
