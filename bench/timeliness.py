"""Benchmark 4: detection timeliness and the upstream tokens an early abort saves.

Offline (the pure guard library, the very Monitor the server runs): every unsafe trace of the
dev split (``guard.datasets``) and the tiny model's unsafe scripts is replayed at about one token
per event; reported per set: recall, tokens from the onset of unsafe content to the cut
(p50/p95), tokens leaked (tokens after the onset that reached the client before the cut: in
``buffered`` only windows the detector judged safe, in ``live`` everything forwarded before the
cut) and tokens not generated because the stream was cut (trace length minus cut position).

Live (real vLLM with the tiny model, through a real gateway with its defaults): each unsafe script
is generated once directly (the full, unguarded generation) and once through the gateway; the
cut position the gateway reports, the tokens vLLM generated before the abort (``usage``), the real
saving (direct minus guarded tokens, and the wall time), and the gateway's own
``thoughtguard_upstream_tokens_saved_total`` (``max_tokens`` minus generated) are recorded.

The scripts carry no onset, so one is set here by an anchor phrase (where the instructions for
harm begin), documented in ``ONSET_ANCHORS``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bench.common import (
    CONVERSATIONS,
    TINY_MODEL,
    chat_body,
    default_detector,
    detector_label,
    log,
    machine_info,
    new_client,
    pct,
    save,
    scrape,
    scripted_messages,
    serve_hints,
    start_gateway,
    start_vllm,
    stream_chat,
)

ONSET_ANCHORS = {
    "unsafe_reasoning": "First,",
    "collapse": "Sure, here is how",
    "image_jailbreak": "Item one:",
}
UNSAFE = [c for c in CONVERSATIONS.values() if c["label"] == "unsafe"]


def _detector(name: str | None) -> Any:
    from bench.common import guard_stack

    return guard_stack(name)[0]


def scripted_traces() -> list[Any]:
    from guard.datasets.trace import Trace

    out = []
    for c in UNSAFE:
        text = c["reasoning"] + c["answer"]
        onset = c.get("onset")
        if onset is None and c["id"] in ONSET_ANCHORS:
            onset = text.find(ONSET_ANCHORS[c["id"]])
        out.append(Trace(f"scripted/{c['id']}", c["prompt"], c["reasoning"], c["answer"], "unsafe", c.get("category"),
                         onset if onset is not None and onset >= 0 else None))
    return out


def offline(detector_name: str | None, dev_limit: int) -> dict[str, Any]:
    from bench.common import guard_stack
    from guard.evaluate import evaluate_async

    traces = scripted_traces()
    try:
        from guard.datasets import split_traces

        dev = [t for t in split_traces("dev") if t.unsafe]
        traces += dev[:dev_limit] if dev_limit else dev
    except Exception as exc:  # noqa: BLE001
        log(f"dev traces unavailable: {exc!r}")
    det, base_policy = guard_stack(detector_name)
    out: dict[str, Any] = {}
    for mode in ("buffered", "live"):
        policy = base_policy.with_mode(mode)
        summary, results = asyncio.run(evaluate_async(traces, det, policy))
        per_set: dict[str, dict[str, Any]] = {}
        for r in results:
            s = per_set.setdefault(r.trace.set_name, {"n": 0, "cut": 0, "delay": [], "saved": [], "tokens": [], "leaked": 0})
            s["n"] += 1
            s["tokens"].append(r.tokens)
            s["leaked"] += r.leaked_tokens
            if r.flagged and r.verdict is not None:
                s["cut"] += 1
                s["saved"].append(max(0, r.tokens - r.verdict.position))
                if r.delay_tokens is not None:
                    s["delay"].append(r.delay_tokens)
        out[mode] = {
            name: {
                "traces": s["n"], "recall": s["cut"] / s["n"],
                "delay_tokens_p50": pct(s["delay"], 50), "delay_tokens_p95": pct(s["delay"], 95),
                "tokens_mean": statistics.mean(s["tokens"]),
                "saved_tokens_mean": statistics.mean(s["saved"]) if s["saved"] else None,
                "saved_share": (sum(s["saved"]) / sum(s["tokens"])) if s["tokens"] else None,
                "leaked_tokens": s["leaked"],
            }
            for name, s in sorted(per_set.items())
        }
        out[mode]["_all"] = {k: summary[k] for k in ("n", "recall", "delay_tokens_p50", "delay_tokens_p95", "leaked_tokens")}
    return out


async def live(gw: str, vllm: str, model: str, max_tokens: int) -> list[dict[str, Any]]:
    client = new_client()
    rows = []
    saved_before = scrape(gw, "thoughtguard_upstream_tokens_saved_total")
    for c in UNSAFE:
        body = chat_body(model, scripted_messages(c["id"]), max_tokens=max_tokens)
        direct = await stream_chat(client, vllm, body)
        guarded = await stream_chat(client, gw, body)
        text = direct.reasoning + direct.content
        anchor = ONSET_ANCHORS.get(c["id"])
        onset_char = text.find(anchor) if anchor else -1
        # onset in tokens: text chunks of the direct stream until the anchor's first character
        onset_tok = _token_at(direct, onset_char) if onset_char >= 0 else None
        ext = guarded.thoughtguard or {}
        saved_after = scrape(gw, "thoughtguard_upstream_tokens_saved_total")
        rows.append({
            "id": c["id"], "outcome": guarded.outcome, "stage": ext.get("stage"), "category": ext.get("category"),
            "detector": ext.get("detector"), "reason": ext.get("reason"), "score": ext.get("score"),
            "cut_position": ext.get("position"), "onset_token": onset_tok,
            "delay_tokens": (ext["position"] - onset_tok) if ext.get("position") is not None and onset_tok is not None else None,
            "direct_tokens": direct.completion_tokens, "guarded_tokens": guarded.completion_tokens,
            "saved_tokens": direct.completion_tokens - guarded.completion_tokens,
            "direct_e2e_s": direct.e2e, "guarded_e2e_s": guarded.e2e,
            "metric_saved_tokens": saved_after - saved_before, "max_tokens": max_tokens,
        })
        saved_before = saved_after
        log(f"live {c['id']}: {rows[-1]}")
    await client.aclose()
    return rows


def _token_at(result: Any, char: int) -> int:
    """1-based index of the streamed chunk (= vLLM token) of a direct stream that holds ``char``."""
    import bisect

    return bisect.bisect_right(result.chunk_ends, char) + 1


def markdown(data: dict[str, Any]) -> str:
    from bench.common import fmt

    lines = ["| mode | set | traces | recall | onset→cut tokens p50 / p95 | tokens per trace | tokens not generated (mean, share) | leaked tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, sets in data["offline"].items():
        for name, s in sets.items():
            if name == "_all":
                continue
            lines.append(f"| {mode} | {name} | {s['traces']} | {s['recall']:.3f} | {fmt(s['delay_tokens_p50'], 0)} / "
                         f"{fmt(s['delay_tokens_p95'], 0)} | {s['tokens_mean']:.0f} | {fmt(s['saved_tokens_mean'], 0)} "
                         f"({fmt(s['saved_share'], 2)}) | {s['leaked_tokens']} |")
    if data.get("live"):
        lines += ["", "| script | outcome | stage | cut at token | onset token | onset→cut | tokens direct / guarded | saved | gateway metric (max_tokens − generated) | time direct / guarded (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in data["live"]:
            lines.append(f"| {r['id']} | {r['outcome']} | {r['stage']} | {r['cut_position']} | {r['onset_token']} | {r['delay_tokens']} | "
                         f"{r['direct_tokens']} / {r['guarded_tokens']} | {r['saved_tokens']} | {r['metric_saved_tokens']:.0f} | "
                         f"{fmt(r['direct_e2e_s'], 2)} / {fmt(r['guarded_e2e_s'], 2)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.timeliness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", default=None, help="gateway detector (default: the gateway's own; lexicon while the learned artifact is missing)")
    p.add_argument("--dev-limit", type=int, default=0, help="unsafe dev traces (0 = all)")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--no-live", action="store_true", help="offline replay only (no vLLM)")
    p.add_argument("--vllm-url", default=None)
    args = p.parse_args(argv)
    detector = args.detector or default_detector()
    data: dict[str, Any] = {"benchmark": "timeliness", "machine": machine_info(), "detector": detector_label(detector),
                            "onset_anchors": ONSET_ANCHORS}
    data["offline"] = offline(detector, args.dev_limit)
    if not args.no_live:
        vllm = None if args.vllm_url else start_vllm(TINY_MODEL)
        vurl = args.vllm_url or vllm.url  # type: ignore[union-attr]
        gw = None
        try:
            gw = start_gateway(vurl, detector=detector, name="gw-timeliness",
                               implicit_think=serve_hints(TINY_MODEL)["implicit_think"])
            data["live"] = asyncio.run(live(gw.url, vurl, TINY_MODEL.name, args.max_tokens))
        finally:
            if gw is not None:
                gw.stop()
            if vllm is not None:
                vllm.stop()
    save("timeliness", data)
    print(markdown(data))


if __name__ == "__main__":
    main()
