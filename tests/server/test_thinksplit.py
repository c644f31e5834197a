"""The inline <think> splitter over random chunkings (no server needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.events import Stage
from server.thinksplit import ThinkSplitter

text = st.text(alphabet=st.characters(blacklist_characters="<>*", blacklist_categories=("Cs",)), max_size=80)
open_tags = st.sampled_from(["<think>", "< think >", "<think >", "**<think>**", "<THINK>", "<think>\n"])
close_tags = st.sampled_from(["</think>", "</ think>", "< /think >", "**</think>**", "</think>\n\n"])


def split_into(s: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(s) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points + [len(s)]:
        pieces.append(s[prev:p])
        prev = p
    return pieces


def run(chunks: list[str], **kw: bool) -> dict[Stage, str]:
    splitter = ThinkSplitter(**kw)
    out = []
    for c in chunks:
        out += splitter.feed(c)
    out += splitter.flush()
    got: dict[Stage, str] = {Stage.REASONING: "", Stage.ANSWER: ""}
    for d in out:
        assert d.text, "no empty deltas"
        got[d.stage] += d.text
    return got


@settings(max_examples=300, deadline=None)
@given(text, text, open_tags, close_tags, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_tags_cut_anywhere(thought: str, answer: str, op: str, cl: str, cuts: list[int]) -> None:
    whole = f"{op}{thought}{cl}{answer}"
    got = run(split_into(whole, cuts))
    assert got[Stage.REASONING] == thought.lstrip()
    assert got[Stage.ANSWER] == answer.lstrip()


@settings(max_examples=200, deadline=None)
@given(text, text, close_tags, st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_missing_open_tag_with_prefilled_template(thought: str, answer: str, cl: str, cuts: list[int]) -> None:
    got = run(split_into(f"{thought}{cl}{answer}", cuts), implicit_open=True)
    assert got[Stage.REASONING] == thought.lstrip()
    assert got[Stage.ANSWER] == answer.lstrip()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120), st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_text_without_tags_is_all_answer(body: str, cuts: list[int]) -> None:
    if "think" in body.lower():
        return
    got = run(split_into(body, cuts))
    assert got[Stage.REASONING] == ""
    assert got[Stage.ANSWER] == body.lstrip()


def test_later_tags_after_close_are_text() -> None:
    got = run(["<think>a</think>b <think> c"])
    assert got == {Stage.REASONING: "a", Stage.ANSWER: "b <think> c"}


def test_markdown_bold_and_whitespace() -> None:
    got = run(["**<", "think", ">**", "plan **bold** ok", "**</think", ">**", "\n\nDone"])
    assert got == {Stage.REASONING: "plan **bold** ok", Stage.ANSWER: "Done"}
