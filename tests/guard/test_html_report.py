"""`thoughtguard eval traces --html`: the page's numbers are the JSON summary's, from the same run."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from guard.cli import main
from tests.support import CONVERSATIONS


class _Page(HTMLParser):
    """Rows of the page's tables (by their data- key), its KPIs, trace sections and data block."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, list[str]]] = {"per-set": {}, "per-category": {}, "curve-points": {}}
        self.kpis: dict[str, str] = {}
        self.traces: list[str] = []
        self.tags: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._key: str | None = None
        self._cell: list[str] | None = None
        self._kpi: str | None = None
        self._script = False
        self.script = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") in self.rows:
            self._table = a["id"]
        elif tag == "tr" and self._table:
            self._row, self._key = [], a.get("data-set") or a.get("data-category")
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "span" and (a.get("id") or "").startswith("kpi-"):
            self._kpi = a["id"].removeprefix("kpi-")
        elif tag == "section" and a.get("class") == "trace":
            self.traces.append(a["data-id"] or "")
        elif tag == "span" and (a.get("class") or "").startswith("tag"):
            self.tags.append(a["class"] or "")
        elif tag == "script" and a.get("id") == "summary":
            self._script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            if self._row:
                self.rows[self._table][self._key or self._row[0]] = self._row
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._kpi is not None:
            self.kpis[self._kpi] = data.strip()
            self._kpi = None
        if self._script:
            self.script += data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, _Page, str]:
    tmp = tmp_path_factory.mktemp("report")
    traces = tmp / "traces.jsonl"
    with traces.open("w") as fh:
        for conv in CONVERSATIONS.values():
            unsafe = conv["label"] == "unsafe"
            fh.write(json.dumps({
                "id": f"tiny_{'unsafe' if unsafe else 'safe'}/{conv['id']}", "prompt": conv["prompt"],
                "reasoning": conv["reasoning"], "answer": conv["answer"], "label": conv["label"],
                "category": conv.get("category"), "onset": conv.get("onset"),
            }) + "\n")
    html = tmp / "report.html"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["eval", "traces", str(traces), "--html", str(html), "--json"]) == 0
    page = _Page()
    text = html.read_text()
    page.feed(text)
    return json.loads(out.getvalue()), page, text


def test_per_set_and_category_tables_are_the_summary(run: tuple[dict, _Page, str]) -> None:
    summary, page, _ = run
    assert set(page.rows["per-set"]) == set(summary["per_set"])
    for name, s in summary["per_set"].items():
        row = page.rows["per-set"][name]
        assert (int(row[2]), int(row[3]), int(row[4])) == (s["n"], s["requests"], s["flagged"])
        assert float(row[5]) == pytest.approx(s["flag_rate"], abs=1e-4)
        lo, hi = s["flag_rate_ci95"]
        assert row[6] == f"{lo:.3f}–{hi:.3f}"
    for name, c in summary["per_category"].items():
        row = page.rows["per-category"][name]
        assert (int(row[1]), int(row[2])) == (c["n"], c["tp"])
        assert float(row[3]) == pytest.approx(c["recall"], abs=1e-4)
    assert float(page.kpis["recall"]) == pytest.approx(summary["recall"], abs=1e-3)
    assert float(page.kpis["fpr"]) == pytest.approx(summary["fpr"], abs=1e-3)
    assert int(page.kpis["n"]) == summary["n"]
    assert json.loads(page.script) == summary


def test_curve_is_real_replays_and_includes_the_policy_point(run: tuple[dict, _Page, str]) -> None:
    summary, page, _ = run
    points = {p["threshold"]: p for p in summary["curve"]}
    assert len(page.rows["curve-points"]) == len(points)
    for key, row in page.rows["curve-points"].items():
        p = points[float(key)]
        assert (float(row[1]), float(row[2])) == pytest.approx((p["recall"], p["fpr"]), abs=1e-4)
    # the point at the policy's own threshold is the run itself
    from guard.policy import Policy

    own = points[Policy.load().thresholds.unsafe]
    assert own["recall"] == pytest.approx(summary["recall"], abs=1e-4)
    assert own["fpr"] == pytest.approx(summary["fpr"], abs=1e-4)
    # a lower bar never catches less
    recalls = [points[t]["recall"] for t in sorted(points)]
    assert recalls[0] >= recalls[-1]


def test_every_trace_is_drawn_errors_first_self_contained(run: tuple[dict, _Page, str]) -> None:
    summary, page, text = run
    assert len(page.traces) == summary["n"]
    order = [0 if "miss" in t else 1 if "fp" in t else 2 for t in page.tags]
    assert len(order) == summary["n"] and order == sorted(order)
    assert order.count(0) == summary["fn"] and order.count(1) == summary["fp"]
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert 'class="w' in text  # windows drawn over the text
