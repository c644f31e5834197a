"""Benchmark 5: time to first visible token in ``buffered`` mode, against an upstream paced like a GPU model.

Against the tiny CPU model (benchmark 1) a whole stream takes ~0.1 s, so ``buffered`` mode's wait
for its first window looks like a multiple of the model's TTFT; what a user of a real model sees
depends on the model's pace. Here the replay upstream (``bench.replay_upstream --ttft --tok-rate``)
sends the tiny model's recorded benign reasoning streams as a GPU-served model would: the first
token 150 ms after the request (prefill), then 40 tok/s. Each request goes, one at a time and in
a fresh random order per round, to:

* ``direct``: the replay upstream itself,
* ``guard-off``: thoughtguard with ``--no-guard``,
* ``buffered``: thoughtguard with the guard on (the gateway's default detector), ``buffered`` mode.

Reported per target: TTFT (first reasoning or answer text) p50 / p99 and its ratio to
``direct``; for ``buffered``, how far behind the model the first visible token is: the added
TTFT in tokens at the upstream's pace ((TTFT − direct TTFT p50) × rate) and the upstream tokens
that the first visible chunk carries (the guard releases its first window as one chunk, so the
model had generated at least those before the client saw any). The target is one window
(``window.every_tokens``, 16) at most.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
from typing import Any

from bench.common import (
    ROOT,
    TINY_MODEL,
    chat_body,
    default_detector,
    detector_label,
    fmt,
    log,
    machine_info,
    new_client,
    pct,
    ratio,
    save,
    scripted_messages,
    serve_hints,
    start_gateway,
    start_replay,
    stream_chat,
)
from loadtest.sse import StreamResult

FIXTURES = ROOT / "bench" / "fixtures" / "tiny-mlrm-vl.jsonl"
PROMPTS = ["benign", "benign_math"]  # benign reasoning streams (30 and 19 tokens) with a prompt of text only
GOAL_TOKENS_BEHIND = 16  # one window of the shipped policy


def _first_chunk_tokens(guarded: StreamResult, direct: StreamResult) -> int | None:
    """Upstream tokens (the direct stream's chunks) within the guarded stream's first visible chunk."""
    if not guarded.chunk_ends or not direct.chunk_ends:
        return None
    return min(bisect.bisect_left(direct.chunk_ends, guarded.chunk_ends[0]) + 1, len(direct.chunk_ends))


async def _run(args: argparse.Namespace, targets: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    client = new_client()
    raw: dict[str, dict[str, list[StreamResult]]] = {t: {p: [] for p in PROMPTS} for t in targets}

    def body(prompt: str, mode: str | None) -> dict[str, Any]:
        return chat_body(TINY_MODEL.name, scripted_messages(prompt), max_tokens=args.max_tokens, mode=mode)

    log("warm-up")
    for base, mode in targets.values():
        for prompt in PROMPTS:
            await stream_chat(client, base, body(prompt, mode))
    for rnd in range(args.rounds):
        order = [(t, p) for t in targets for p in PROMPTS]
        rng.shuffle(order)
        for name, prompt in order:
            base, mode = targets[name]
            raw[name][prompt].append(await stream_chat(client, base, body(prompt, mode)))
        log(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
            f"{n} {fmt(pct([r.ttft for p in PROMPTS for r in raw[n][p][-1:]], 50), 3)} s" for n in targets))
    await client.aclose()

    d_ttft = {p: pct([r.ttft for r in raw["direct"][p] if r.error is None], 50) for p in PROMPTS}
    # the replay is deterministic: any whole direct stream of a prompt gives its token boundaries
    reference = {p: next((r for r in raw["direct"][p] if r.error is None), None) for p in PROMPTS}
    table: dict[str, Any] = {}
    for name in targets:
        rows: dict[str, Any] = {}
        for prompt in [*PROMPTS, "all"]:
            prompts = PROMPTS if prompt == "all" else [prompt]
            results = [r for p in prompts for r in raw[name][p]]
            ok = [r for r in results if r.error is None]
            ttft = [r.ttft for r in ok if r.ttft is not None]
            behind = [(r.ttft - d_ttft[p]) * args.tok_rate for p in prompts for r in raw[name][p]
                      if r.error is None and r.ttft is not None and d_ttft[p] is not None]
            first = [n for p in prompts for r in raw[name][p] if r.error is None
                     and reference[p] is not None and (n := _first_chunk_tokens(r, reference[p])) is not None]
            d_all = [r.ttft for p in prompts for r in raw["direct"][p] if r.error is None and r.ttft is not None]
            rows[prompt] = {
                "requests": len(results), "errors": len(results) - len(ok),
                "outcomes": {o: sum(r.outcome == o for r in results) for o in {r.outcome for r in results}},
                "tokens_per_request": sum(r.completion_tokens for r in ok) / len(ok) if ok else None,
                "ttft_p50_ms": _ms(pct(ttft, 50)), "ttft_p99_ms": _ms(pct(ttft, 99)),
                "ttft_ratio_p50": ratio(pct(ttft, 50), pct(d_all, 50)),
                "ttft_ratio_p99": ratio(pct(ttft, 99), pct(d_all, 99)),
                "tokens_behind_p50": pct(behind, 50), "tokens_behind_max": max(behind, default=None),
                "first_chunk_tokens_p50": pct(first, 50), "first_chunk_tokens_max": max(first, default=None),
            }
        table[name] = rows
    return {"table": table}


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1000


def markdown(data: dict[str, Any]) -> str:
    lines = [f"Upstream: first token after {data['ttft_s'] * 1000:.0f} ms, then {data['tok_rate']:.0f} tok/s; "
             f"goal: the first visible token at most {data['goals']['tokens_behind_max']} tokens behind the model's.", "",
             "| target | stream | requests | TTFT p50 / p99 (ms) | TTFT ratio to direct p50 / p99 | tokens behind p50 / max | "
             "upstream tokens in the first visible chunk p50 / max | outcomes |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rows in data["table"].items():
        for prompt, s in rows.items():
            lines.append(
                f"| {name} | {prompt} | {s['requests']} | {fmt(s['ttft_p50_ms'], 0)} / {fmt(s['ttft_p99_ms'], 0)} | "
                f"{fmt(s['ttft_ratio_p50'], 2)} / {fmt(s['ttft_ratio_p99'], 2)} | {fmt(s['tokens_behind_p50'], 1)} / "
                f"{fmt(s['tokens_behind_max'], 1)} | {fmt(s['first_chunk_tokens_p50'], 0)} / "
                f"{fmt(s['first_chunk_tokens_max'], 0)} | "
                + ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items())) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.paced", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ttft", type=float, default=0.15, help="the upstream's time to first token (s)")
    p.add_argument("--tok-rate", type=float, default=40.0, help="the upstream's tokens/s per stream after the first")
    p.add_argument("--rounds", type=int, default=10, help="requests per target and stream")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--detector", default=None,
                   help="guarded gateway's detector (default: the gateway's own; lexicon while its artifact is missing)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    detector = args.detector or default_detector()
    implicit = serve_hints(TINY_MODEL)["implicit_think"]
    replay = off = on = None
    try:
        replay = start_replay(FIXTURES, tok_rate=args.tok_rate, extra=["--ttft", str(args.ttft)], name="replay-paced")
        off = start_gateway(replay.url, guard=False, name="gw-paced-off", implicit_think=implicit)
        on = start_gateway(replay.url, guard=True, detector=detector, name="gw-paced-on", implicit_think=implicit)
        targets: dict[str, tuple[str, str | None]] = {"direct": (replay.url, None), "guard-off": (off.url, None),
                                                      "buffered": (on.url, "buffered")}
        data = asyncio.run(_run(args, targets))
    finally:
        for child in (off, on, replay):
            if child is not None:
                child.stop()
    from guard.policy import Policy

    data.update(benchmark="paced", machine=machine_info(), detector=detector_label(detector), prompts=PROMPTS,
                ttft_s=args.ttft, tok_rate=args.tok_rate, args=vars(args),
                policy_window=Policy.load(None).window.model_dump(),
                goals={"tokens_behind_max": GOAL_TOKENS_BEHIND})
    save("paced", data)
    print(markdown(data))


if __name__ == "__main__":
    main()
