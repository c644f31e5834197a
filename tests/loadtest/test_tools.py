"""The load-test and benchmark tools themselves: SSE reading, task mix, the replay upstream.

No vLLM here: these check the measuring instruments (a wrong parser would report wrong latencies
or hide failures). The replay upstream is checked as an instrument only; the gateway's behaviour
is tested against the real vLLM elsewhere.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bench.common import chat_body, new_client, start_replay, stream_chat
from bench.replay_upstream import FIXTURES_DIR
from loadtest.sse import StreamReader, StreamResult, result_from_json
from loadtest.taskmix import DEFAULT_MIX, SMOKE_MIX, TaskMix, parse_mix


def _frame(obj: dict) -> str:
    return "data: " + json.dumps(obj)


def _feed(lines: list[str]) -> StreamResult:
    clock = iter(range(100)).__next__
    r = StreamResult(start=0.0)
    reader = StreamReader(r, clock=lambda: float(clock()))
    for ln in lines:
        reader.feed_line(ln)
    return reader.finish()


def _delta(**d: object) -> dict:
    return {"choices": [{"index": 0, "delta": d, "finish_reason": None}]}


def test_reader_times_reasoning_answer_and_usage() -> None:
    r = _feed([
        _frame(_delta(role="assistant", content="")), "",
        _frame(_delta(reasoning="Think")), "",
        _frame(_delta(reasoning=" more")), "",
        ": keep-alive", "",
        _frame(_delta(content="Answer")), "",
        _frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}), "",
        _frame({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}), "",
        "data: [DONE]", "",
    ])
    assert r.error is None and r.done and r.outcome == "ok"
    assert r.reasoning == "Think more" and r.content == "Answer"
    assert r.ttft == 1.0 and r.ttfat == 3.0  # the role chunk carries no text
    assert r.itl == [1.0, 1.0] and r.completion_tokens == 7
    assert r.chunk_ends == [5, 10, 16]


def test_reader_outcomes_and_failures() -> None:
    blocked = _feed([_frame({"choices": [{"index": 0, "delta": {"content": "I can't help."}, "finish_reason": "content_filter",
                                          "thoughtguard": {"action": "block", "stage": "reasoning"}}]}), "data: [DONE]"])
    assert blocked.outcome == "blocked" and blocked.error is None and blocked.first_answer is None
    steered = _feed([_frame(_delta(content="ok")), _frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                                                          "thoughtguard": {"action": "steer"}}]}), "data: [DONE]"])
    assert steered.outcome == "steered"
    err = _feed([_frame(_delta(content="x")), _frame({"error": {"message": "upstream stream failed", "type": "upstream_error"}}),
                 "data: [DONE]"])
    assert err.outcome == "error" and err.done and "upstream stream failed" in (err.error or "")
    truncated = _feed([_frame(_delta(content="x"))])
    assert truncated.outcome == "error" and "without [DONE]" in (truncated.error or "")
    no_finish = _feed([_frame(_delta(content="x")), "data: [DONE]"])
    assert no_finish.outcome == "error"


def test_non_streaming_body() -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "I can't help with that.",
                                                   "refusal": "I can't help with that.", "thoughtguard": {"action": "block"}},
                         "finish_reason": "content_filter"}], "usage": {"completion_tokens": 12}}
    r = result_from_json(StreamResult(start=0.0), body, 2.0)
    assert r.outcome == "blocked" and r.completion_tokens == 12 and r.e2e == 2.0


def test_mix_parsing_and_loading() -> None:
    entries = parse_mix("benign=3, harmful=1 ,figstep:nostream=0.5,image=0")
    assert [(e.name, e.weight) for e in entries] == [("benign", 3.0), ("harmful", 1.0), ("figstep:nostream", 0.5)]
    with pytest.raises(ValueError):
        parse_mix("nonsense=1")
    with pytest.raises(ValueError):
        parse_mix("benign:sideways=1")
    mix = TaskMix(DEFAULT_MIX + ",scripted_benign=1,scripted_unsafe=1", seed=0)
    assert all(v["prompts"] > 0 for v in mix.describe().values())
    drawn = {mix.draw().name for _ in range(400)}
    assert {"benign", "xstest", "harmful", "figstep", "image", "benign:nostream"} <= drawn
    figstep = next(p for p in iter(mix.draw, None) if p.kind == "figstep")
    assert figstep.label == "unsafe" and figstep.messages[0]["content"][0]["image_url"]["url"].startswith("data:image/png")
    smoke = TaskMix(SMOKE_MIX, seed=0)
    assert smoke.labels == {"scripted_benign": "safe", "scripted_unsafe": "unsafe"}
    assert {s for _, s in smoke.pools["scripted_benign"]} == {"scripted/benign", "scripted/benign_math", "scripted/benign_image",
                                                              "scripted/benign_sensitive"}


def test_replay_upstream_replays_stalls_and_cuts() -> None:
    """The instrument itself: recorded frames come back, paced; stall and cut obey the controls."""
    fixture = FIXTURES_DIR / "tiny-mlrm-vl.jsonl"
    replay = start_replay(fixture, tok_rate=200.0, name="test-replay")
    try:
        rec = json.loads(fixture.read_text().splitlines()[0])
        body = chat_body(rec["model"], [{"role": "user", "content": rec["prompt"]}], max_tokens=256)

        async def run() -> None:
            async with new_client() as client:
                r = await stream_chat(client, replay.url, body)
                assert r.error is None and r.finish_reason == "stop"
                recorded = "".join((json.loads(f["data"])["choices"] or [{}])[0].get("delta", {}).get("reasoning") or ""
                                   for f in rec["frames"] if json.loads(f["data"])["choices"])
                assert r.reasoning == recorded
                assert r.e2e is not None and r.e2e >= (len(rec["frames"]) - 1) / 200.0 * 0.9  # paced

                short = await stream_chat(client, replay.url, {**body, "max_tokens": 5})
                assert short.finish_reason == "length" and len(short.chunk_times) == 5

                httpx.post(replay.url + "/control/stall", json={"seconds": 1.0, "after_frames": 2})
                stalled = await stream_chat(client, replay.url, body)
                assert stalled.error is None and max(stalled.itl) >= 0.9
                httpx.post(replay.url + "/control/cut", json={"after_frames": 3})
                cut = await stream_chat(client, replay.url, body)
                assert cut.error is not None and not cut.done
                httpx.post(replay.url + "/control/reset")
                stats = httpx.get(replay.url + "/control/stats").json()
                assert stats["active"] == 0 and stats["cut"] == 1

        asyncio.run(run())
    finally:
        replay.stop()
