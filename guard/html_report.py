"""``eval traces --html``: one self-contained page that shows where the reader fails.

No script and nothing fetched at view time: tables, two inline SVG plots (recall/FPR over the main
threshold, the cut-delay histogram) and one row per trace with each checked window tinted by its
score (the number on hover). Missed unsafe traces and blocked safe ones come first.
"""

from __future__ import annotations

import json
from html import escape
from typing import Sequence

from guard.evaluate import TraceResult
from guard.policy import Policy
from guard.sweep import Point
from guard.verdict import Reading

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2330;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 9px;border-bottom:1px solid #dde;text-align:right}
td:first-child,th:first-child{text-align:left}.bad{color:#b3261e;font-weight:600}
.kpi{display:inline-block;margin:0 18px 8px 0}.kpi b{font-size:19px;display:block}
.trace{border:1px solid #dde;border-radius:6px;padding:8px 12px;margin:10px 0}
.trace header{font-size:13px;color:#556}.trace header b{color:#1d2330}
.text{white-space:pre-wrap;font:12.5px/1.5 ui-monospace,monospace;margin:6px 0}
.stage{font-size:11px;color:#778;text-transform:uppercase;margin-top:6px}
.w0{background:#e7f5ea}.w1{background:#fff3c4}.w2{background:#ffd59e}.w3{background:#ffab91}.w4{background:#ef7d6d}
.unread{color:#99a}.onset{border-left:3px solid #6a3de8;margin-left:-1px}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;margin-left:6px;background:#eef}
.tag.miss{background:#ffd7d3}.tag.fp{background:#ffe9b8}
.legend span{padding:1px 8px;margin-right:6px;font-size:12px}
"""


def _band(score: float | None, policy: Policy) -> int:
    """0 below ``hold``, 1 from ``hold`` (doubtful, held back), 2 from 0.9 (or ``unsafe`` if lower),
    3 from ``unsafe``, 4 from ``high`` and failed reads."""
    th = policy.thresholds
    if score is None or score != score or score >= th.high:
        return 4
    if score >= th.unsafe:
        return 3
    if score >= min(0.9, th.unsafe):
        return 2
    return 1 if score >= th.hold else 0


def _fmt(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))


def _ci(ci: object) -> str:
    if not ci:
        return "–"
    lo, hi = ci  # type: ignore[misc]
    return f"{lo:.3f}–{hi:.3f}"


def _set_table(summary: dict[str, object]) -> str:
    rows = []
    for name, s in summary["per_set"].items():  # type: ignore[union-attr]
        kind = "unsafe" if s["unsafe"] == s["n"] else "safe" if s["unsafe"] == 0 else "mixed"
        rows.append(
            f'<tr data-set="{escape(name)}"><td>{escape(name)}</td><td>{kind}</td><td class="n">{s["n"]}</td>'
            f'<td class="requests">{s["requests"]}</td><td class="flagged">{s["flagged"]}</td>'
            f'<td class="rate">{s["flag_rate"]:.4f}</td><td class="ci">{_ci(s["flag_rate_ci95"])}</td>'
            f'<td>{_fmt(s["holdback_tokens_mean"])}</td><td>{s["wary"]}</td></tr>'
        )
    head = ("<tr><th>set</th><th>kind</th><th>traces</th><th>requests</th><th>flagged</th>"
            "<th>flag rate</th><th>95 % interval</th><th>hold-back mean</th><th>wary</th></tr>")
    return f'<table id="per-set">{head}{"".join(rows)}</table>'


def _category_table(summary: dict[str, object]) -> str:
    rows = "".join(
        f'<tr data-category="{escape(name)}"><td>{escape(name)}</td><td class="n">{c["n"]}</td>'
        f'<td class="tp">{c["tp"]}</td><td class="recall">{c["recall"]:.4f}</td><td>{c["advisory"]}</td></tr>'
        for name, c in summary["per_category"].items()  # type: ignore[union-attr]
    )
    return ('<table id="per-category"><tr><th>category (unsafe traces)</th><th>traces</th><th>cut</th>'
            f'<th>recall</th><th>flag only</th></tr>{rows}</table>')


def _curve(points: Sequence[Point], current: float) -> str:
    if not points:
        return "<p>No threshold sweep (pass --curve).</p>"
    w, h, pad = 460, 300, 42
    x = lambda fpr: pad + fpr * (w - 2 * pad)  # noqa: E731
    y = lambda rec: h - pad - rec * (h - 2 * pad)  # noqa: E731
    xmax = max(0.05, max(p.fpr for p in points))
    xs = lambda fpr: x(fpr / xmax)  # noqa: E731
    path = " ".join(f"{'M' if i == 0 else 'L'}{xs(p.fpr):.1f},{y(p.recall):.1f}"
                    for i, p in enumerate(sorted(points, key=lambda p: (p.fpr, p.recall))))
    dots = "".join(
        f'<circle cx="{xs(p.fpr):.1f}" cy="{y(p.recall):.1f}" r="{6 if p.threshold == current else 3.5}" '
        f'fill="{"#b3261e" if p.threshold == current else "#3557c5"}"><title>unsafe ≥ {p.threshold}: recall '
        f'{p.recall:.3f}, FPR {p.fpr:.3f}</title></circle>'
        f'<text x="{xs(p.fpr) + 6:.1f}" y="{y(p.recall) + 12:.1f}" font-size="10" fill="#556">{p.threshold}</text>'
        for p in points
    )
    ticks = "".join(
        f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.1f}</text>'
        f'<text x="{xs(v * xmax):.1f}" y="{h - pad + 14}" font-size="10" text-anchor="middle">{v * xmax:.3f}</text>'
        for v in (0, 0.25, 0.5, 0.75, 1.0)
    )
    rows = "".join(f'<tr><td>{p.threshold}</td><td>{p.recall:.4f}</td><td>{p.fpr:.4f}</td></tr>' for p in points)
    return (
        f'<svg id="curve" width="{w}" height="{h}" role="img" aria-label="recall against false-positive rate">'
        f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="#f7f8fb" stroke="#ccd"/>'
        f'<path d="{path}" fill="none" stroke="#3557c5" stroke-width="1.5"/>{dots}{ticks}'
        f'<text x="{w / 2}" y="{h - 6}" font-size="11" text-anchor="middle">false-positive rate (safe traces)</text>'
        f'<text x="12" y="{h / 2}" font-size="11" transform="rotate(-90 12 {h / 2})" text-anchor="middle">recall</text>'
        f'</svg><table id="curve-points"><tr><th>unsafe ≥</th><th>recall</th><th>FPR</th></tr>{rows}</table>'
    )


def _histogram(delays: Sequence[int]) -> str:
    if not delays:
        return "<p>No cut of an unsafe trace with a marked onset.</p>"
    edges = [0, 1, 8, 16, 32, 48, 64, 128, 256, 512, 10**9]
    counts = [sum(lo <= d < hi for d in delays) for lo, hi in zip(edges, edges[1:])]
    labels = ["0", "1–7", "8–15", "16–31", "32–47", "48–63", "64–127", "128–255", "256–511", "512+"]
    w, h, pad, top = 460, 220, 30, max(counts)
    bw = (w - 2 * pad) / len(counts)
    bars = "".join(
        f'<rect x="{pad + i * bw + 2:.1f}" y="{h - pad - (c / top) * (h - 2 * pad):.1f}" width="{bw - 4:.1f}" '
        f'height="{(c / top) * (h - 2 * pad):.1f}" fill="#3557c5"><title>{lab} tokens: {c}</title></rect>'
        f'<text x="{pad + (i + .5) * bw:.1f}" y="{h - pad + 13}" font-size="9" text-anchor="middle">{lab}</text>'
        f'<text x="{pad + (i + .5) * bw:.1f}" y="{h - pad - (c / top) * (h - 2 * pad) - 3:.1f}" font-size="10" '
        f'text-anchor="middle">{c}</text>'
        for i, (c, lab) in enumerate(zip(counts, labels))
    )
    return (f'<svg id="delays" width="{w}" height="{h}" role="img" aria-label="cut delay histogram">{bars}'
            f'<text x="{w / 2}" y="{h - 4}" font-size="11" text-anchor="middle">tokens from the onset to the cut'
            f'</text></svg>')


def _painted(text: str, readings: Sequence[Reading], offset: int, onset: int | None, policy: Policy) -> str:
    """``text`` with each read window tinted; what no window read (the stream was cut) greyed."""
    out, pos = [], 0
    mark = None if onset is None else onset - offset

    def plain(a: int, b: int, cls: str = "") -> None:
        nonlocal mark
        if a >= b:
            return
        if mark is not None and a <= mark < b:
            cut, mark = mark, None
            plain(a, cut, cls)
            out.append('<span class="onset" title="onset of the harm"></span>')
            plain(cut, b, cls)
            return
        piece = escape(text[a:b])
        out.append(f'<span class="{cls}">{piece}</span>' if cls else piece)

    for r in sorted(readings, key=lambda r: r.start):
        if r.start < pos:
            continue
        plain(pos, r.start, "unread")
        score = "failed" if r.unsafe != r.unsafe else f"{r.unsafe:.4f}"
        tip = f"{score} · {r.decision}" + (f" · {r.category}" if r.category else "") + f" · token {r.position}"
        out.append(f'<span class="w{_band(r.unsafe, policy)}" title="{escape(tip)}">')
        plain(r.start, r.end)
        out.append("</span>")
        pos = r.end
    plain(pos, len(text), "unread")
    return "".join(out)


def _outcome(r: TraceResult) -> tuple[int, str]:
    if r.trace.unsafe and not r.flagged:
        return 0, '<span class="tag miss">missed</span>'
    if not r.trace.unsafe and r.flagged:
        return 1, '<span class="tag fp">blocked safe</span>'
    return 2, '<span class="tag">caught</span>' if r.flagged else '<span class="tag">passed</span>'


def _trace(r: TraceResult, policy: Policy) -> str:
    t = r.trace
    _, tag = _outcome(r)
    v = r.verdict
    why = f" · {v.action.value} at token {v.position} in the {v.stage.value} ({v.reason}, {v.score:.4f})" if v else ""
    delay = f" · delay {r.delay_tokens}" if r.delay_tokens is not None else ""
    first = lambda stage: [x for x in r.readings if x.stage.value == stage and x.attempt == 0]  # noqa: E731
    onset = t.onset if t.unsafe else None
    body = (f'<div class="stage">thought</div><div class="text">'
            f'{_painted(t.reasoning, first("reasoning"), 0, onset, policy)}</div>')
    if t.answer:
        body += (f'<div class="stage">answer</div><div class="text">'
                 f'{_painted(t.answer, first("answer"), len(t.reasoning), onset, policy)}</div>')
    return (f'<section class="trace" data-id="{escape(t.id)}"><header><b>{escape(t.id)}</b> · {t.label}'
            f'{" · " + escape(t.category) if t.category else ""}{tag}{escape(why)}{delay}</header>'
            f'<div class="stage">request</div><div class="text">{escape(t.prompt[:600])}</div>{body}</section>')


def render(summary: dict[str, object], results: Sequence[TraceResult], policy: Policy, *,
           curve: Sequence[Point] = (), max_traces: int = 300, title: str = "thoughtguard evaluation") -> str:
    """The report page. Every missed unsafe trace and blocked safe one is drawn; the rest only
    while fewer than ``max_traces`` rows have been drawn."""
    ordered = sorted(results, key=lambda r: (_outcome(r)[0], r.trace.id))
    errors = [r for r in ordered if _outcome(r)[0] < 2]
    rest = [r for r in ordered if _outcome(r)[0] == 2][: max(0, max_traces - len(errors))]
    delays = [r.delay_tokens for r in results if r.delay_tokens is not None]
    th = policy.thresholds
    kpis = "".join(
        f'<span class="kpi" id="kpi-{k}"><b>{_fmt(summary[k])}</b>{label}</span>'
        for k, label in (("recall", "recall"), ("fpr", "false-positive rate"), ("n", "traces"),
                         ("delay_tokens_p50", "cut delay p50"), ("delay_tokens_p95", "cut delay p95"),
                         ("leaked_tokens", "tokens leaked"), ("holdback_tokens_mean", "hold-back mean"))
    )
    legend = (f'<p class="legend"><span class="w0">&lt; hold {th.hold}</span><span class="w1">≥ hold</span>'
              f'<span class="w2">≥ {min(0.9, th.unsafe)}</span><span class="w3">≥ unsafe {th.unsafe}</span>'
              f'<span class="w4">≥ high {th.high}</span><span class="unread">not read</span> '
              '<span class="onset">onset</span> hover a window for its score</p>')
    data = json.dumps(summary).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{escape(title)}</h1>
<p>detector <b>{escape(str(summary.get("detector", "")))}</b>, mode <b>{escape(str(summary.get("mode", "")))}</b>,
thresholds unsafe {th.unsafe} ×{th.consecutive}, high {th.high}, hold {th.hold}.</p>
<div>{kpis}</div>
<p>recall 95 % interval {_ci(summary.get("recall_ci95"))}; FPR 95 % interval {_ci(summary.get("fpr_ci95"))}
(intervals cluster traces by request).</p>
<h2>Per set</h2>{_set_table(summary)}
<h2>Per category</h2>{_category_table(summary)}
<h2>Recall against false positives over the main threshold</h2>{_curve(curve, th.unsafe)}
<h2>Cut delay (unsafe traces with a marked onset, cut)</h2>{_histogram(delays)}
<h2>Traces</h2>
<p>{len(errors)} missed or wrongly blocked, all drawn first; then {len(rest)} of the
{len(results) - len(errors)} others.</p>{legend}
{"".join(_trace(r, policy) for r in errors + rest)}
<script type="application/json" id="summary">{data}</script>
</body></html>
"""
