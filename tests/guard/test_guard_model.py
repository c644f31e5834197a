"""Guard-model prompts and parsers, with outputs as Llama Guard 3 and Qwen3Guard-Gen write them."""

from __future__ import annotations

import asyncio

import pytest

from guard.detectors.base import Window
from guard.detectors.guard_model import GuardModelDetector
from guard.detectors.guard_prompts import (
    llama_guard_3_prompt,
    parse_llama_guard,
    parse_qwen3guard,
    qwen3guard_prompt,
)
from guard.events import Stage
from guard.monitor import Monitor
from guard.policy import Policy
from guard.events import reasoning

# recorded generations (the completion text after the prompt), including the models' habits:
# Llama Guard ends with <|eot_id|> when special tokens are kept, and may put a blank line first
LG_SAFE = "\n\nsafe"
LG_UNSAFE = "\n\nunsafe\nS9"
LG_UNSAFE_MULTI = "unsafe\nS1,S10<|eot_id|>"
LG_MALFORMED = "I cannot determine the safety of this conversation."
Q_SAFE = "Safety: Safe\nCategories: None\nRefusal: Yes"
Q_UNSAFE = "Safety: Unsafe\nCategories: Non-violent Illegal Acts\nRefusal: No"
Q_CONTROVERSIAL = "Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No"
Q_MULTI = "Safety: Unsafe\nCategories: Violent, Suicide & Self-Harm\nRefusal: No<|im_end|>"
Q_MALFORMED = "The response seems fine to me."
Q_TRUNCATED = "Safety:"


def test_llama_guard_prompt_layout():
    p = llama_guard_3_prompt("How do I make a bomb?", "Step 1: get")
    assert p.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    assert "S14: Code Interpreter Abuse." in p
    assert "User: How do I make a bomb?\n\nAgent: Step 1: get" in p
    assert "ONLY THE LAST Agent message" in p
    assert p.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "ONLY THE LAST User message" in llama_guard_3_prompt("hi")


def test_qwen3guard_prompt_layout():
    p = qwen3guard_prompt("hi", "hello")
    assert p.startswith("<|im_start|>user\n# Task:")
    assert "Refusal: Yes', 'Refusal: No'" in p
    assert "USER: hi\n\nASSISTANT: hello" in p
    assert "Jailbreak" not in p.split("<END UNSAFE CONTENT CATEGORIES>")[0]  # input-only category
    assert "Refusal" not in qwen3guard_prompt("hi")
    assert p.endswith("<|im_start|>assistant\n")


def test_llama_guard_parsing():
    assert not parse_llama_guard(LG_SAFE).unsafe
    r = parse_llama_guard(LG_UNSAFE)
    assert r.unsafe and r.categories == ("S9",)
    assert parse_llama_guard(LG_UNSAFE_MULTI).categories == ("S1", "S10")
    with pytest.raises(ValueError):
        parse_llama_guard(LG_MALFORMED)
    with pytest.raises(ValueError):
        parse_llama_guard("")


def test_qwen3guard_parsing():
    r = parse_qwen3guard(Q_SAFE)
    assert r.severity == "safe" and r.refusal is True and r.categories == ()
    r = parse_qwen3guard(Q_UNSAFE)
    assert r.unsafe and r.categories == ("S2",) and r.refusal is False
    r = parse_qwen3guard(Q_CONTROVERSIAL)
    assert not r.unsafe and r.severity == "controversial" and r.categories == ("S13",)
    assert parse_qwen3guard(Q_MULTI).categories == ("S1", "S11")
    for bad in (Q_MALFORMED, Q_TRUNCATED):
        with pytest.raises(ValueError):
            parse_qwen3guard(bad)


def _detector(answer: str, fmt: str):
    prompts: list[str] = []

    async def complete(prompt: str) -> str:
        prompts.append(prompt)
        return answer

    return GuardModelDetector(complete, format=fmt), prompts  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fmt,answer,unsafe,category,refusal",
    [
        ("llama_guard_3", LG_SAFE, 0.0, None, 0.0),
        ("llama_guard_3", LG_UNSAFE, 1.0, "S9", 0.0),
        ("qwen3guard_gen", Q_SAFE, 0.0, None, 1.0),
        ("qwen3guard_gen", Q_UNSAFE, 1.0, "S2", 0.0),
        ("qwen3guard_gen", Q_CONTROVERSIAL, 0.5, "S13", 0.0),
    ],
)
def test_detector_maps_readings(fmt, answer, unsafe, category, refusal):
    det, prompts = _detector(answer, fmt)
    w = Window(Stage.REASONING, "new text", "old ", "the user prompt")
    (d,) = asyncio.run(det.detect([w]))
    assert (d.unsafe, d.category, d.refusal, d.detector) == (unsafe, category, refusal, fmt)
    assert "the user prompt" in prompts[0] and "old new text" in prompts[0]


def test_detector_raises_on_garbage_and_monitor_fails_closed():
    det, _ = _detector(LG_MALFORMED, "llama_guard_3")
    with pytest.raises(ValueError):
        asyncio.run(det.detect([Window(Stage.ANSWER, "x")]))
    policy = Policy.model_validate({"window": {"every_tokens": 2, "min_tokens": 2}})
    m = Monitor(det, policy)

    async def run():
        for t in (" a", " b"):
            await m.feed(reasoning(t))

    asyncio.run(run())
    assert m.stopped is not None and m.stopped.reason == "detector_error"


def test_unknown_format_is_rejected():
    async def complete(prompt: str) -> str:
        return ""

    with pytest.raises(ValueError):
        GuardModelDetector(complete, format="gpt_guard")  # type: ignore[arg-type]
