"""``thoughtguard train | eval | data``: the guard's offline commands.

``server/cli.py`` adds these to the ``thoughtguard`` command; ``python -m guard.cli`` runs them
alone. Progress goes to stderr, results to stdout (one JSON object with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guard.detectors.base import Detector
    from guard.policy import Policy

# per-check latency is reported for one core: keep numpy's BLAS and the tokenizer single-threaded
# (only effective when nothing imported numpy earlier in this process)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


_STATIC_DIR = str(Path(__file__).resolve().parent / "artifacts")


def _print_summary(result: dict[str, object]) -> None:
    keys = ("n", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "fpr", "delay_tokens_p50",
            "delay_tokens_p95", "leaked_tokens", "check_ms_p50", "check_ms_p99", "traces_per_s")
    for k in keys:
        print(f"{k:>18}: {result[k]}")
    print("per set (flag rate = recall on unsafe sets, FPR on safe ones):")
    for name, s in result["per_set"].items():  # type: ignore[union-attr]
        print(f"  {name:>18}: n={s['n']:<5} flagged={s['flagged']:<5} rate={s['flag_rate']}")
    print("per category (unsafe traces):")
    for name, c in result["per_category"].items():  # type: ignore[union-attr]
        print(f"  {name:>5}: n={c['n']:<4} recall={c['recall']} advisory-only={c['advisory']}")


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio

    from guard.datasets.trace import read_traces
    from guard.detectors.stack import DEFAULT_STACK, build
    from guard.evaluate import evaluate_async
    from guard.evaluate_prompts import evaluate_prompts
    from guard.policy import Policy

    policy = Policy.load(args.policy).with_mode(args.mode)
    name = args.detector or ("learned" if args.what == "prompts" else DEFAULT_STACK)
    detector = build(name, args.artifact, threads=args.threads)
    if args.what == "prompts":
        if args.traces_out or args.html:
            raise SystemExit("--traces-out and --html go with `eval traces`")
        result = evaluate_prompts(read_traces(args.file), detector, policy)
        print(json.dumps(result) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in result.items()))
        return 0
    if args.html is None:
        result, results = asyncio.run(evaluate_async(read_traces(args.file), detector, policy,
                                                     show_progress=not args.json))
    else:
        result, results = asyncio.run(_eval_html(args, detector, policy))
    if args.traces_out:
        with open(args.traces_out, "w") as fh:
            fh.writelines(json.dumps(r.record()) + "\n" for r in results)
    if args.json:
        print(json.dumps(result))
    else:
        _print_summary(result)
    return 0


async def _eval_html(args: argparse.Namespace, detector: "Detector", policy: "Policy") -> tuple[dict, list]:
    """The run, with every window's reading kept, then the threshold sweep (from the same readings
    where it can) and the page."""
    from guard.datasets.trace import read_traces
    from guard.detectors.memo import Memo
    from guard.evaluate import evaluate_async
    from guard.html_report import render
    from guard.sweep import sweep

    traces = list(read_traces(args.file))
    memo = Memo(detector)
    result, results = await evaluate_async(traces, memo, policy, keep_readings=True, show_progress=True)
    curve = await sweep(traces, memo, policy) if args.curve else []
    if curve:
        result["curve"] = [p.as_dict() for p in curve]
    args.html.write_text(render(result, results, policy, curve=curve, max_traces=args.html_traces,
                                title=f"thoughtguard evaluation: {args.file.name}"))
    print(f"wrote {args.html} ({len(results)} traces, {memo.reads} windows read)", file=sys.stderr)
    return result, results


def cmd_data(args: argparse.Namespace) -> int:
    from guard.datasets import SOURCES, data_dir, split_traces, write_traces

    from guard.datasets import reasoning_traces

    if args.set in ("dev", "val"):
        from guard.datasets.spoof import with_requests
        from guard.datasets.suite import suite

        traces = suite(data_dir(args.data_dir), args.set, seed=args.seed)
        traces = list(with_requests(traces, args.request, data_dir(args.data_dir), args.seed))
    elif args.set in ("static_dev", "static_val"):  # the static classifier's older mixture (guard/artifacts/README.md)
        traces = split_traces(args.set.removeprefix("static_"), args.data_dir, seed=args.seed)
    elif args.set in reasoning_traces.FILES:
        traces = [t.trace for t in reasoning_traces.read(data_dir(args.data_dir), args.set)]
    elif args.set == "xstest_prompts":
        from guard.datasets.xstest import prompt_traces

        traces = list(prompt_traces(data_dir(args.data_dir)))
    else:
        traces = [s.trace() for s in SOURCES[args.set](data_dir(args.data_dir))]
    n = write_traces(args.out, traces)
    print(f"wrote {n} traces to {args.out}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.reader == "intent":
        return _train_intent(args)
    from guard.training import train

    from guard.training.model import config_from

    report = train(args.data_dir, args.out, args.seed, cache_dir=args.cache_dir, generated=args.generated,
                   tune_on=args.tune_on, config=config_from(args), policy_path=args.policy)
    if args.json:
        print(json.dumps(report))
        return 0
    dev = report["dev"]
    print(f"artifact: {args.out} ({report['artifact_bytes']} bytes), trained in {report['train_seconds']} s")
    print(f"thresholds picked on {report['tuned_on']} (never dev): {json.dumps(report['thresholds'])}")
    print("dev figures (never used for tuning):")
    _print_summary(dev)  # type: ignore[arg-type]
    return 0


def _train_intent(args: argparse.Namespace) -> int:
    from guard.detectors.intent import INTENT_DIR
    from guard.training.intent import train
    from guard.training.intent_model import IntentConfig

    config = IntentConfig(epochs=args.intent_epochs)
    out = args.out if args.out != _STATIC_DIR else str(INTENT_DIR)
    report = train(args.data_dir, out, args.seed, cache_dir=args.cache_dir, config=config, policy_path=args.policy,
                   scale=args.scale, replayed=args.replayed_answers)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"intent reader: {out} ({report['artifact_bytes']} bytes), trained in {report['train_seconds']} s")
    print(f"thresholds picked on validation (never dev): {json.dumps(report['thresholds'])}")
    print("dev figures (never used for tuning):")
    _print_summary(report["dev"])  # type: ignore[arg-type]
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from guard.datasets import SOURCES
    from guard.datasets.generated import SHIPPED, SHIPPED_HARMFUL, SHIPPED_NEIGHBOURS, generated_files
    from guard.datasets.spoof import REQUESTS
    from guard.datasets.reasoning_traces import FILES
    from guard.detectors.stack import DEFAULT_STACK, STACKS
    from guard.training.model import add_config_arguments

    p = subparsers.add_parser("train", help="rebuild the intent reader (or the older static classifier) from ../shared/data")
    p.add_argument("--reader", choices=["intent", "static"], default="intent",
                   help="intent: the cross-encoder (guard/artifacts/intent/, the default detector); static: the older "
                        "static-vector classifier (guard/artifacts/classifier.npz)")
    p.add_argument("--data-dir", default=None, help="default: $THOUGHTGUARD_DATA_DIR or ../shared/data")
    p.add_argument("--out", default=_STATIC_DIR, help="artifact directory (default: the shipped one of --reader)")
    p.add_argument("--scale", type=float, default=1.0, help="intent: share of each window group's cap to train on")
    p.add_argument("--intent-epochs", type=int, default=3, help="intent: passes over the training windows")
    p.add_argument("--replayed-answers", action="store_true",
                   help="intent: also teach the older sets' answers streamed as a thought (harmful and safe alike)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=".cache/thoughtguard", help="distilled embedding cache")
    p.add_argument("--generated", default=f"{SHIPPED},{SHIPPED_HARMFUL},{SHIPPED_NEIGHBOURS}", type=generated_files,
                   help="comma-separated JSONL files of answers a local model wrote (scripts/generate_answers.py); "
                        "default: the shipped benign, harmful and neighbours files; '' for none")
    p.add_argument("--tune-on", choices=["crossval", "validation"], default="crossval",
                   help="pick the thresholds on pooled 4-fold out-of-fold scores plus the artifact's own validation "
                        "scores, each safe set held to the FPR floor (default; 5x the training time), "
                        "or on the validation slice alone")
    p.add_argument("--policy", default=None,
                   help="policy YAML whose window settings the windows are cut with and the thresholds tuned for "
                        "(default: guard/policies/default.yaml); the tuned thresholds are written into figures.json")
    add_config_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="replay traces through the guard monitor, or requests through the prompt check")
    p.add_argument("what", choices=["traces", "prompts"])
    p.add_argument("file", type=Path, help="JSONL traces: id, prompt, reasoning, answer, label, category, onset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--policy", default=None, help="policy YAML (default: guard/policies/default.yaml)")
    p.add_argument("--mode", choices=["buffered", "hidden", "live"], default=None)
    p.add_argument("--detector", choices=STACKS, default=None,
                   help="detector stack (default: the gateway's for traces; for prompts, the static classifier's "
                        "request head, which the gateway's prompt check uses)")
    p.add_argument("--artifact", default=None, help="the detector's artifact directory (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1, help="the intent reader's ONNX Runtime threads (default 1)")
    p.add_argument("--traces-out", type=Path, default=None,
                   help="traces only: also write one JSON line per trace (its verdict: stage, rule, category, "
                        "score, position, the window that decided; delay, cut before the onset, leaked tokens)")
    p.add_argument("--html", type=Path, default=None,
                   help="traces: also write a self-contained HTML report (tables, curve, delays, each trace's windows)")
    p.add_argument("--html-traces", type=int, default=300,
                   help="rows drawn in the report: every miss and wrong block, then others up to this many")
    p.add_argument("--curve", action=argparse.BooleanOptionalAction, default=True,
                   help="with --html: sweep the main threshold (replays from remembered readings)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("data", help="convert a ../shared/data set into traces")
    p.add_argument("set", choices=[*SOURCES, *FILES, "dev", "val", "static_dev", "static_val", "xstest_prompts"],
                   help="a source set (reasoning_traces/ files by their name), the evaluation suite's dev / val split "
                        "(reasoning traces by group or request, plus the older sets' answers), the static "
                        "classifier's older mixture, or XSTest's prompts labelled for the prompt check")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--request", choices=REQUESTS, default="own",
                   help="dev / val only: keep each trace's request (default), or write just the unsafe traces "
                        "under a random benign request, none, or a bland image instruction (guard/datasets/spoof.py)")
    p.set_defaults(func=cmd_data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guard.cli", description=__doc__)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
