"""The reasoning-trace converters and the evaluation suite: sets by source and kind, split by group or request."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from guard.cli import main as guard_cli
from guard.datasets import data_dir
from guard.datasets.reasoning_traces import FILES, load
from guard.datasets.split import split_of
from guard.datasets.suite import CAPS, suite
from guard.datasets.trace import read_traces


@pytest.fixture(scope="module")
def traces():
    return load(data_dir())


def test_every_trace_gets_its_source_and_kind_as_its_set(traces) -> None:
    names = {t.trace.set_name for t in traces}
    assert {"written_harmful", "written_jailbreak", "written_image", "written_collapse", "written_refusal",
            "written_benign_sensitive", "written_drafting", "written_benign", "selfjb_unsafe", "selfjb_safe",
            "safekey", "benign_r1", "orbench_hard"} == names
    for t in traces:
        if t.trace.set_name.startswith("written_") and t.trace.unsafe:
            assert t.trace.onset is not None and 0 <= t.trace.onset <= len(t.trace.text)
        assert t.trace.set_name.startswith(("written", "selfjb")) or t.source == t.trace.set_name
    assert {t.source for t in traces} == set(FILES)


def test_a_group_or_a_request_never_straddles_the_split(traces) -> None:
    parts = defaultdict(set)
    for t in traces:
        parts[t.group].add(split_of(t.group))
        if t.source != "written":  # the same request answered by several models is one group
            parts["prompt:" + " ".join(t.trace.prompt.lower().split())].add(split_of(t.group))
    assert all(len(p) == 1 for p in parts.values())
    written = [t for t in traces if t.source == "written"]
    assert len({t.group for t in written}) > 200  # split by themed set, not by trace
    by_model = defaultdict(set)
    for t in traces:
        if t.source == "selfjb":
            by_model[t.group].add(t.trace.id)
    assert max(len(v) for v in by_model.values()) > 1  # several models' traces share one group


def test_the_suite_has_every_kind_in_dev_and_caps_the_large_sets() -> None:
    dev = suite(data_dir(), "dev")
    names = {t.set_name for t in dev}
    assert {"written_harmful", "written_refusal", "selfjb_unsafe", "safekey", "benign_r1", "orbench_hard",
            "star1", "xstest_safe", "unsafe_answer"} <= names
    assert "unsafe_reasoning" not in names  # harmful answers replayed as thoughts are not in the suite
    for name, cap in CAPS.items():
        assert sum(t.set_name == name for t in dev) <= cap
    assert not {t.id for t in dev} & {t.id for t in suite(data_dir(), "val")}


def test_cli_writes_a_source_and_the_dev_split(tmp_path: Path) -> None:
    out = tmp_path / "written.jsonl"
    assert guard_cli(["data", "written", "--out", str(out)]) == 0
    rows = read_traces(out)
    assert len(rows) == sum(1 for _ in open(data_dir() / "reasoning_traces" / "written.jsonl"))
    assert rows[0].id.startswith("written_") and json.loads(out.read_text().splitlines()[0])["label"] in ("safe", "unsafe")
    dev = tmp_path / "dev.jsonl"
    assert guard_cli(["data", "dev", "--out", str(dev)]) == 0
    assert {t.id for t in read_traces(dev)} == {t.id for t in suite(data_dir(), "dev")}
